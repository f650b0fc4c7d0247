"""The official openai Node SDK (npm `openai`, from `node/package-lock.json`) on tuneserve:
`node/flows.mjs` runs its common flows and prints what it saw; this checks it."""

import json
import os
import subprocess
from pathlib import Path

from tests.support.server import TuneserveServer
from tests.support.training import BASE

NODE_DIR = Path(__file__).parent / "node"


def test_node_sdk_flows(chat_server: TuneserveServer) -> None:
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), (
        "the Node SDK is not installed: `make test` does it (npm ci --prefix tests/clients/node)")
    run = subprocess.run(
        ["node", "flows.mjs"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OPENAI_BASE_URL": chat_server.base_url,
             "OPENAI_API_KEY": chat_server.api_key, "TUNESERVE_MODEL": BASE})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])

    file, upload = seen["file"], seen["upload"]
    assert file["status"] == "processed" and file["bytes"] == file["sent_bytes"]
    assert file["content_equal"]
    assert upload["status"] == "completed" and upload["content_equal"]
    # Both files, each on its own page, newest first.
    listed = seen["files_listed"]
    assert listed.index(upload["file_id"]) < listed.index(file["id"]), listed
    assert len(listed) == len(set(listed))

    job = seen["job"]
    assert job["id"].startswith("ftjob-") and job["model"] == BASE and job["listed"]
    assert job["cancelled"] == job["retrieved"] == "cancelled"

    chat = seen["chat_stream"]
    assert chat["text"] and chat["chunks"] > 2
    assert 0 < chat["usage"]["completion_tokens"] <= 16
    assert chat["usage"]["total_tokens"] == (chat["usage"]["prompt_tokens"]
                                             + chat["usage"]["completion_tokens"])

    response, streamed = seen["response"], seen["response_stream"]
    assert response["id"].startswith("resp") and response["output_text"]
    assert 0 < response["usage"]["output_tokens"] <= 16
    # 16 tokens cut both short: `incomplete`, streamed or not.
    assert response["status"] == streamed["status"] == "incomplete"
    assert streamed["first"] == "response.created"
    assert streamed["last"] in ("response.completed", "response.incomplete")
    assert streamed["text"] == streamed["final_text"] and streamed["text"]
