"""A tenant sends strings longer than their columns, or holding NUL characters: SQLite stores
and compares them, PostgreSQL fails the statement (a 500), for a file's name only after the
whole body streamed in. Every such string is a 400 naming its field, on both databases, and
the server keeps serving. A model name as long as a fine-tuned model's may be (512
characters) can be fine-tuned from."""

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from storage.db import Database
from storage.ids import new_id, random_token
from storage.models import FineTunedModel
from tests.adversarial.conftest import start_control_plane, stop_control_plane
from tests.support.in_process import InProcessControlPlane
from tests.support.server import TuneserveServer

BASE = "SmolLM2-135M-Instruct"
WEBHOOK = {"name": "hook", "url": "https://example.com/hook",
           "event_types": ["fine_tuning.job.failed"]}
UPLOAD = {"bytes": 3, "filename": "u.txt", "mime_type": "text/plain", "purpose": "batch"}
JOB = {"model": BASE, "training_file": "file-none"}


def _refused(answer: httpx.Response, param: str | None) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


@pytest.fixture
def http(control_plane: InProcessControlPlane) -> Iterator[httpx.Client]:
    with control_plane.http() as client:
        yield client
    # Whatever it was sent, the server still answers.
    with control_plane.http() as client:
        assert client.get("/files").status_code == 200


def _read_answer(sock: socket.socket) -> str:
    """One HTTP/1.1 answer with a content-length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TuneserveServer]:
    """A `tuneserve serve` on each database: a request that stops half-way through its body
    is one a socket carries."""
    server, name = start_control_plane(tmp_path_factory.mktemp(f"overlong-{request.param}"),
                                       request.param)
    yield server
    stop_control_plane(server, name)


@pytest.mark.server
def test_an_overlong_filename_is_refused_before_the_file_streams(
        served: TuneserveServer) -> None:
    boundary = "b-" + random_token(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"user_data\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{'n' * 600}\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    promised = len(head) + (8 << 20)  # 8 MiB of file that never comes
    request = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {served.api_key}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {promised}\r\n\r\n").encode() + head
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request)
        answer = _read_answer(sock)
    status, _, body = answer.partition("\r\n\r\n")
    assert status.startswith("HTTP/1.1 400"), answer
    assert json.loads(body)["error"]["param"] == "file", body
    with served.http() as http:  # and it still serves
        assert http.get("/files").status_code == 200


@pytest.mark.parametrize(("filename", "why"), [("n" * 513, "long"), ("a\x00b", "nul")])
def test_a_files_name_the_table_cannot_hold_is_refused(http: httpx.Client, filename: str,
                                                       why: str) -> None:
    # httpx would escape a NUL in a header: the form is written out here.
    boundary = "b-" + random_token(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"user_data\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            f"--{boundary}--\r\n").encode()
    _refused(http.post("/files", content=body, headers={
        "content-type": f"multipart/form-data; boundary={boundary}"}), "file")


@pytest.mark.parametrize(("route", "body", "param"), [
    ("/uploads", UPLOAD | {"filename": "n" * 513}, "filename"),
    ("/uploads", UPLOAD | {"mime_type": "m" * 256}, "mime_type"),
    ("/uploads", UPLOAD | {"filename": "a\x00b"}, "filename"),
    ("/uploads", UPLOAD | {"mime_type": "text/\x00"}, "mime_type"),
    ("/webhook_endpoints", WEBHOOK | {"name": "n" * 257}, "name"),
    ("/webhook_endpoints", WEBHOOK | {"url": "https://example.com/" + "u" * 2040}, "url"),
    ("/webhook_endpoints", WEBHOOK | {"name": "a\x00b"}, "name"),
    ("/fine_tuning/jobs", JOB | {"model": "ft:" + "m" * 510}, "model"),
    ("/fine_tuning/jobs", JOB | {"model": "ft:\x00"}, "model"),
    ("/fine_tuning/jobs", JOB | {"training_file": "file-\x00"}, "training_file"),
    ("/fine_tuning/jobs", JOB | {"suffix": "s" * 65}, "suffix"),
    ("/fine_tuning/jobs", JOB | {"metadata": {"k" * 65: "v"}}, "metadata"),
    ("/fine_tuning/jobs", JOB | {"metadata": {"k": "v" * 513}}, "metadata.k"),
    ("/fine_tuning/jobs", JOB | {"metadata": {"k\x00": "v"}}, "metadata"),
    ("/fine_tuning/checkpoints/ft:x/permissions", {"project_ids": ["proj_\x00"]},
     "project_ids"),
    ("/uploads/upload_x/complete", {"part_ids": ["part_\x00"]}, "part_ids"),
    ("/chat/completions", {"model": "ft:\x00", "messages": []}, "model"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 60 and "\x00" not in v else None)
def test_a_json_string_its_column_cannot_hold_is_refused(
        http: httpx.Client, route: str, body: dict[str, object], param: str) -> None:
    _refused(http.post(route, json=body), param)


@pytest.mark.parametrize(("method", "path", "param"), [
    ("GET", "/files/file-%00", "file_id"),
    ("DELETE", "/files/file-%00", "file_id"),
    ("GET", "/files?after=file-%00", "after"),
    ("GET", "/files?purpose=batch%00", "purpose"),
    ("POST", "/uploads/upload_%00/cancel", "upload_id"),
    ("GET", "/fine_tuning/jobs/ftjob-%00/events", "fine_tuning_job_id"),
    ("GET", "/fine_tuning/jobs?after=ftjob-%00", "after"),
    ("GET", "/fine_tuning/jobs?metadata%5Bk%5D=v%00", "metadata[k]"),
    ("GET", "/fine_tuning/checkpoints/ft:x%00/permissions", "fine_tuned_model_checkpoint"),
    ("GET", "/models/ft:x%00", "model"),
    ("DELETE", "/models/ft:x%00", "model"),
    ("GET", "/webhook_endpoints/whe_%00", "webhook_endpoint_id"),
])
def test_a_nul_in_the_url_is_refused(http: httpx.Client, method: str, path: str,
                                     param: str) -> None:
    _refused(http.request(method, path), param)


def test_a_project_name_the_table_cannot_hold_is_refused(
        control_plane: InProcessControlPlane) -> None:
    with pytest.raises(RuntimeError, match="a project's name has 1 to 128 characters"):
        control_plane.cli("keys", "create", "--project", "p" * 129)


@pytest.fixture
def long_named_model(control_plane: InProcessControlPlane) -> Iterator[str]:
    """A fine-tuned model of the default project whose name is 300 characters long (a long
    base name and suffix make one), written straight into the control plane's database,
    with its adapter's config in the blob store."""
    db = Database(control_plane.database_url)
    name = f"ft:{BASE}:default:{'s' * 64}:{random_token(8)}:" + "x" * 200
    name = name[:300]
    owner = next(row["project_id"] for row in control_plane.api_keys()
                 if row["project"] == "default")
    prefix = f"adapters/{owner}/{random_token(8)}/"
    config = control_plane.data_dir / "blobs" / prefix / "adapter_config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"r": 8, "lora_alpha": 16,
                                  "target_modules": ["q_proj", "v_proj"]}))
    with db.session() as s:
        s.add(FineTunedModel(id=name, project_id=owner, job_id=new_id("ftjob-"),
                             base_model=BASE, adapter_prefix=prefix,
                             created_at=int(time.time())))
    yield name
    with db.session() as s:
        s.delete(s.scalar(select(FineTunedModel).where(FineTunedModel.id == name)))
    db.dispose()


def test_a_long_named_fine_tuned_model_can_be_fine_tuned_from(
        http: httpx.Client, long_named_model: str) -> None:
    # Valid JSONL that is no chat data: the job fails its validation, and never trains.
    training = http.post("/files", data={"purpose": "fine-tune"},
                         files={"file": ("t.jsonl", b'{"x": 1}\n')}).json()["id"]
    job = http.post("/fine_tuning/jobs", json={"model": long_named_model,
                                               "training_file": training})
    assert job.status_code == 200, job.text
    assert job.json()["model"] == long_named_model
    http.post(f"/fine_tuning/jobs/{job.json()['id']}/cancel")
