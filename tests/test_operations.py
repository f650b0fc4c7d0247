"""What an operator runs the service with: request ids on every response and log line,
structured logs, `/metrics`, `/ready`, live job events, and keys revoked at once on every
API process."""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import postgres
from tests.support.server import ROOT, TuneserveServer, metric
from tests.support.training import BASE, jsonl, sft_example

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[
        tuple[TuneserveServer, TuneserveServer]]:
    """Two API nodes on one PostgreSQL (local blobs, no engine); the second logs JSON."""
    name, url = postgres.create_database()
    env = {"TUNESERVE_DATABASE_URL": url, "TUNESERVE_MODELS_DIR": str(models_dir)}
    a = TuneserveServer(tmp_path_factory.mktemp("ops-a"), env).start()
    b = TuneserveServer(tmp_path_factory.mktemp("ops-b"), env | {"TUNESERVE_LOG_FORMAT": "json"},
                        api_key=a.api_key).start()
    yield a, b
    a.stop()
    b.stop()
    postgres.drop_database(name)


def test_every_response_carries_a_request_id_that_the_logs_name(
        two_nodes: tuple[TuneserveServer, TuneserveServer]) -> None:
    a, b = two_nodes
    with a.http() as http:
        mine = http.get("/files", headers={"x-request-id": "trace-42.a:b"})
        fresh = http.get("/files")
        hostile = http.get("/files", headers={"x-request-id": "bad id\twith spaces"})
    unauthenticated = httpx.get(a.base_url + "/files", headers={"x-request-id": "trace-43"})
    assert mine.headers["x-request-id"] == "trace-42.a:b"
    assert re.fullmatch(r"req_[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert re.fullmatch(r"req_[0-9a-f]{32}", hostile.headers["x-request-id"])
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["x-request-id"] == "trace-43"
    for answer in (mine, fresh, unauthenticated):
        assert int(answer.headers["openai-processing-ms"]) >= 0
    log = a.log_path.read_text()
    assert "[trace-42.a:b] GET /v1/files 200" in log
    assert "[trace-43] GET /v1/files 401" in log
    assert f"[{fresh.headers['x-request-id']}]" in log

    # The JSON node: every line it wrote is one object, and a request's lines carry its id.
    with b.http() as http:
        http.get("/files/file-nope", headers={"x-request-id": "trace-44"})
    lines = [json.loads(line) for line in b.log_path.read_text().splitlines() if line]
    assert lines and all({"time", "level", "logger", "request_id", "message"} <= set(x)
                         for x in lines)
    mine_json = [x for x in lines if x["request_id"] == "trace-44"]
    assert mine_json and "404" in mine_json[-1]["message"]


def test_metrics_count_requests_per_route_and_status(
        two_nodes: tuple[TuneserveServer, TuneserveServer]) -> None:
    a, _ = two_nodes
    before = a.metrics()
    with a.http() as http:
        for _ in range(3):
            assert http.get("/files").status_code == 200
        assert http.get("/files/file-missing").status_code == 404
    after = a.metrics()
    name = "tuneserve_http_request_duration_seconds_count"
    ok = dict(method="GET", route="/v1/files", status="200")
    missing = dict(method="GET", route="/v1/files/{file_id}", status="404")
    assert metric(after, name, **ok) - metric(before, name, **ok) == 3
    assert metric(after, name, **missing) - metric(before, name, **missing) == 1
    assert ("tuneserve_fine_tuning_oldest_queued_seconds", ()) in after


def test_ready_checks_database_storage_and_engine(
        two_nodes: tuple[TuneserveServer, TuneserveServer]) -> None:
    a, _ = two_nodes
    answer = httpx.get(a.base_url.removesuffix("/v1") + "/ready")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {
        "database": "ok", "storage": "ok", "engine": "off"}}


def _key_id(server: TuneserveServer, redacted_tail: str) -> str:
    return next(row["id"] for row in server.api_keys() if row["key"].endswith(redacted_tail))


@pytest.mark.parametrize("nodes", ["postgresql", "sqlite"])
def test_a_revoked_key_stops_working_at_once_on_every_api_process(
        nodes: str, two_nodes: tuple[TuneserveServer, TuneserveServer],
        tmp_path: Path) -> None:
    if nodes == "postgresql":
        servers = list(two_nodes)
    else:
        servers = [TuneserveServer(tmp_path / "data").start()]
    try:
        leaked = servers[0].cli("keys", "create", "--project", f"leaky-{nodes}").strip()
        for server in servers:  # every process has seen (and cached) the key
            for _ in range(2):
                server.client(leaked).files.list()
        key_id = _key_id(servers[0], leaked[-4:])
        assert servers[0].cli("keys", "revoke", key_id).startswith(f"revoked {key_id}")
        for server in servers:
            with pytest.raises(openai.AuthenticationError):
                server.client(leaked).files.list()
            server.client().files.list()  # other keys go on working
        listed = servers[0].cli("keys", "list")
        assert re.search(rf"^{key_id}\s.*\d\d:\d\d:\d\d\s+\d{{4}}-", listed, re.M), listed
        with pytest.raises(RuntimeError, match="no key 'key_nope'"):
            servers[0].cli("keys", "revoke", "key_nope")
    finally:
        if nodes == "sqlite":
            servers[0].stop()


def test_a_short_bootstrap_key_is_refused(tmp_path: Path) -> None:
    env = {"TUNESERVE_DATA_DIR": str(tmp_path), "TUNESERVE_BOOTSTRAP_API_KEY": "sk-short",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "api.cli", "serve"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "TUNESERVE_BOOTSTRAP_API_KEY: Value error, must be at least 32 characters" \
        in out.stderr
    assert "Traceback" not in out.stderr


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str]]:
    """(event, id, data) of each server-sent event."""
    event, event_id, data = "message", "", ""
    for line in lines:
        if not line:
            if data:
                yield event, event_id, data
            event, event_id, data = "message", "", ""
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]


def test_job_events_stream_live_until_the_job_ends(
        two_nodes: tuple[TuneserveServer, TuneserveServer]) -> None:
    a, b = two_nodes
    client = a.client()
    training = client.files.create(file=("t.jsonl", jsonl([sft_example(i) for i in range(8)])),
                                   purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training.id)
    seen: list[tuple[str, str, str]] = []
    with b.http() as http, http.stream("GET", f"/fine_tuning/jobs/{job.id}/events",
                                       params={"stream": "true"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in _sse(stream.iter_lines()):
            seen.append(event)
            if len(seen) == 1:  # the stream is live: what happens now arrives on it
                client.fine_tuning.jobs.cancel(job.id)
    *events, (kind, _, data) = seen
    assert kind == "done" and json.loads(data)["status"] == "cancelled"
    listed = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=100)][::-1]
    assert [event_id for _, event_id, _ in events] == listed  # every one, oldest first
    assert json.loads(events[-1][2])["message"] == "Fine-tuning job cancelled"

    # Resumed after an event: only the later ones, then the end.
    with a.http() as http:
        text = http.get(f"/fine_tuning/jobs/{job.id}/events",
                        params={"stream": "true", "after": listed[0]}).text
    again = list(_sse(iter(text.splitlines())))
    assert [i for _, i, _ in again[:-1]] == listed[1:] and again[-1][0] == "done"

    other = a.other_key()
    with a.http(other) as http:
        answer = http.get(f"/fine_tuning/jobs/{job.id}/events", params={"stream": "true"})
    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "fine_tuning_job_id"


def test_a_metrics_scrape_sees_serving_and_training(local_server: TuneserveServer,
                                                    sft_job: object) -> None:
    client = local_server.client()
    model = sft_job.fine_tuned_model  # type: ignore[attr-defined]
    before = local_server.metrics()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 3 plus 3?"}],
        max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    after = local_server.metrics()
    ttft = "tuneserve_chat_time_to_first_token_seconds_count"
    assert metric(after, ttft, base=BASE) == metric(before, ttft, base=BASE) + 1
    assert metric(after, "tuneserve_chat_generated_tokens_total", base=BASE) > \
        metric(before, "tuneserve_chat_generated_tokens_total", base=BASE)
    assert metric(after, "tuneserve_fine_tuning_jobs", status="succeeded") >= 1
    assert metric(after, "tuneserve_training_tokens_per_second") > 0
    assert metric(after, "tuneserve_adapter_loads_total", result="loaded") >= 1
