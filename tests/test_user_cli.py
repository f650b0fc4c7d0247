"""`tuneserve files|jobs|models list|chat` as a user runs them: the CLI in its own process,
pointed at the real server by OPENAI_BASE_URL and OPENAI_API_KEY."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api import user_cli
from api.settings import Settings
from tests.conftest import SMALL_FILE_LIMIT
from tests.support.chat import wait_for_engine
from tests.support.ports import free_port
from tests.support.server import ROOT, TuneserveServer
from tests.support.training import BASE, jsonl, sft_example, upload

TRAINING = jsonl([sft_example(i) for i in range(24)])


def tuneserve(server: TuneserveServer, *args: str, key: str | None = None,
              base_url: str | None = None, stdin: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env |= {"OPENAI_BASE_URL": base_url or server.base_url,
            "OPENAI_API_KEY": server.api_key if key is None else key}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def uploaded(s3_server: TuneserveServer,
             tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    path = tmp_path_factory.mktemp("cli") / "train.jsonl"
    path.write_bytes(TRAINING)
    return tuneserve(s3_server, "files", "upload", str(path))


@pytest.fixture(scope="module")
def training_file(uploaded: subprocess.CompletedProcess[str]) -> str:
    return ok(uploaded).strip()


def test_upload_streams_the_file_and_lists_it(s3_server: TuneserveServer, training_file: str,
                                              uploaded: subprocess.CompletedProcess[str]) -> None:
    # The bar counted every byte (drawn once, at the end, when stderr is not a terminal).
    kb = f"{len(TRAINING) / 1000:.1f}"
    assert "train.jsonl" in uploaded.stderr and f"{kb}/{kb} kB" in uploaded.stderr
    assert f"{training_file}: train.jsonl, {len(TRAINING)} bytes, purpose fine-tune" in (
        uploaded.stderr)
    client = s3_server.client()
    assert client.files.content(training_file).read() == TRAINING
    assert client.files.retrieve(training_file).purpose == "fine-tune"

    table = ok(tuneserve(s3_server, "files", "list"))
    row = next(line for line in table.splitlines() if training_file in line)
    assert "train.jsonl" in row and str(len(TRAINING)) in row
    listed = json.loads(ok(tuneserve(s3_server, "files", "list", "--json")))
    assert {"id": training_file, "bytes": len(TRAINING)}.items() <= next(
        f for f in listed if f["id"] == training_file).items()


def test_create_and_follow_a_job_to_success(s3_server: TuneserveServer,
                                            training_file: str) -> None:
    job_id = ok(tuneserve(s3_server, "jobs", "create", "--model", BASE, "--training-file",
                          training_file, "--n-epochs", "1", "--batch-size", "8",
                          "--suffix", "cli", "--seed", "3")).strip()
    client = s3_server.client()
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.method.type == "supervised" and job.seed == 3
    assert job.method.supervised.hyperparameters.n_epochs == 1
    assert job.method.supervised.hyperparameters.batch_size == 8

    followed = tuneserve(s3_server, "jobs", "follow", job_id, timeout=600)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.fine_tuned_model
    out = followed.stdout
    assert "Validating training file" in out  # a message event, printed as a line
    assert "Step 3/3: training loss=" in out  # the last metrics event
    assert "3/3" in out.splitlines()[-2] and "epoch 1/1" in out  # the bar, drawn at the end
    assert out.splitlines()[-1] == f"{job_id} succeeded: fine_tuned_model {job.fine_tuned_model}"

    table = ok(tuneserve(s3_server, "jobs", "list"))
    row = next(line for line in table.splitlines() if job_id in line)
    assert BASE in row and "succeeded" in row and job.fine_tuned_model in row
    # Run again on the finished job: the whole history, then the same ending.
    again = tuneserve(s3_server, "jobs", "follow", job_id)
    assert again.returncode == 0 and again.stdout.count("Step 3/3") == 1


def test_follow_a_cancelled_job_exits_2(s3_server: TuneserveServer) -> None:
    client = s3_server.client()
    job = client.fine_tuning.jobs.create(model=BASE, training_file=upload(
        client, [sft_example(i) for i in range(24)]))
    client.fine_tuning.jobs.cancel(job.id)
    followed = tuneserve(s3_server, "jobs", "follow", job.id)
    assert followed.returncode == 2, followed.stderr
    assert followed.stdout.splitlines()[-1] == f"{job.id} cancelled"


def test_follow_a_failed_job_exits_1_with_its_error(s3_server: TuneserveServer) -> None:
    client = s3_server.client()
    # Valid JSONL, but no fine-tuning example: validation fails the job.
    bad = client.files.create(file=("bad.jsonl", b'{"prompt": "x"}\n'), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE, training_file=bad.id)
    followed = tuneserve(s3_server, "jobs", "follow", job.id)
    assert followed.returncode == 1, followed.stderr
    assert followed.stdout.splitlines()[-1] == f"{job.id} failed"
    error = client.fine_tuning.jobs.retrieve(job.id).error
    assert error is not None and f"error: {error.message}" in followed.stderr


def test_models_list_shows_the_base(s3_server: TuneserveServer) -> None:
    table = ok(tuneserve(s3_server, "models", "list")).splitlines()
    assert table[0].split() == ["id", "owned_by", "created"]
    assert [BASE, "tuneserve"] in [line.split()[:2] for line in table]
    models = json.loads(ok(tuneserve(s3_server, "models", "list", "--json")))
    assert BASE in [m["id"] for m in models]


def test_chat_streams_an_answer(local_server: TuneserveServer) -> None:
    wait_for_engine(local_server)
    answer = ok(tuneserve(local_server, "chat", BASE, "-m", "Say hi", "--max-tokens", "8"))
    assert answer.strip()
    # Without -m: a conversation from stdin, one answer a line of it, until EOF.
    talk = ok(tuneserve(local_server, "chat", BASE, "--system", "Be brief.", "--max-tokens", "8",
                        stdin="Say hi\n\nSay bye\n"))
    assert len([line for line in talk.splitlines() if line.strip()]) >= 2
    # An error answer to the streamed request is said like any other.
    unknown = tuneserve(local_server, "chat", "no-such-model", "-m", "hi")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: The model 'no-such-model' does not exist")


def test_api_errors_are_said_on_stderr(s3_server: TuneserveServer, tmp_path: Path) -> None:
    wrong = tuneserve(s3_server, "files", "list", key="sk-wrong")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "error: Incorrect API key provided."
    missing = tuneserve(s3_server, "jobs", "create", "--model", BASE,
                        "--training-file", "file-missing")
    assert missing.returncode == 1 and "file-missing" in missing.stderr
    follow = tuneserve(s3_server, "jobs", "follow", "ftjob-missing")
    assert follow.returncode == 1 and "ftjob-missing" in follow.stderr
    # Past the server's limit: refused by the declared length, before the body is read.
    big = tmp_path / "big.jsonl"
    big.write_bytes(TRAINING * (SMALL_FILE_LIMIT // len(TRAINING) + 1))
    refused = tuneserve(s3_server, "files", "upload", str(big))
    assert refused.returncode == 1
    assert f"error: File is too large: the limit is {SMALL_FILE_LIMIT} bytes" in refused.stderr


def test_local_mistakes_are_said_before_any_request(s3_server: TuneserveServer,
                                                    tmp_path: Path) -> None:
    absent = tuneserve(s3_server, "files", "upload", str(tmp_path / "nope.jsonl"))
    assert absent.returncode == 1
    assert "nope.jsonl" in absent.stderr and "No such file" in absent.stderr
    no_key = tuneserve(s3_server, "models", "list", key="")
    assert no_key.returncode == 1 and "OPENAI_API_KEY" in no_key.stderr
    beta = tuneserve(s3_server, "jobs", "create", "--model", BASE, "--training-file", "f",
                     "--beta", "0.1")
    assert beta.returncode == 1 and "--method dpo" in beta.stderr
    rpo = tuneserve(s3_server, "jobs", "create", "--model", BASE, "--training-file", "f",
                    "--rpo-alpha", "1")
    assert rpo.returncode == 1 and "--rpo-alpha is a DPO hyperparameter" in rpo.stderr


def test_the_default_base_url_is_where_serve_listens() -> None:
    defaults = Settings.model_fields
    served = f"http://{defaults['host'].default}:{defaults['port'].default}/v1"
    assert served == user_cli.DEFAULT_BASE_URL


def test_unreachable_server_names_the_url(s3_server: TuneserveServer) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    down = tuneserve(s3_server, "models", "list", base_url=url)
    assert down.returncode == 1
    assert f"cannot reach tuneserve at {url}" in down.stderr and "Traceback" not in down.stderr


# `jobs follow` resuming a dropped stream: the server's side cannot be cut from outside, so
# this one runs the CLI's own code against a scripted transport.

EVENTS = [{"id": f"ftevent-{i}", "object": "fine_tuning.job.event", "created_at": 100 + i,
           "level": "info", "message": f"Step {i}/2: training loss=1.0", "type": "metrics",
           "data": {"step": i, "total_steps": 2, "train_loss": 1.0}} for i in (1, 2)]
DONE = {"id": "ftjob-x", "status": "succeeded", "fine_tuned_model": "ft:x"}


class _Dropped(httpx.SyncByteStream):
    """The first event, then the connection breaks."""

    def __iter__(self) -> Iterator[bytes]:
        yield f"id: ftevent-1\ndata: {json.dumps(EVENTS[0])}\n\n".encode()
        raise httpx.ReadError("connection reset")


def test_follow_resumes_after_the_last_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_cli, "RECONNECT_DELAY", 0)
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("after"))
        headers = {"content-type": "text/event-stream"}
        if len(asked) == 1:
            return httpx.Response(200, headers=headers, stream=_Dropped())
        body = (f": ping\n\nid: ftevent-2\ndata: {json.dumps(EVENTS[1])}\n\n"
                f"event: done\ndata: {json.dumps(DONE)}\n\n")
        return httpx.Response(200, headers=headers, content=body.encode())

    http = httpx.Client(base_url="http://tuneserve.test/v1",
                        transport=httpx.MockTransport(answer))
    seen: list[dict] = []  # type: ignore[type-arg]
    job = user_cli.follow_events(user_cli.Api(http, "http://tuneserve.test/v1"), "ftjob-x",
                                 seen.append)
    assert job == DONE
    assert asked == [None, "ftevent-1"]
    assert seen == EVENTS
