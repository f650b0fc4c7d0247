"""A tenant opens event streams (`?stream=true`) by the thousand, on a paused job that may
wait for days: each one polls the DB twice a second for as long as it is open, and the node's
thread pool and DB are shared by every tenant. A project has at most
TUNESERVE_MAX_EVENT_STREAMS_PER_PROJECT open on a node, and a paused job's stream ends once
idle."""

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.adversarial.conftest import start_control_plane, stop_control_plane
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example, upload, wait_for

STREAMS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TuneserveServer]:
    srv, name = start_control_plane(tmp_path_factory.mktemp("streams"), "sqlite", {
        "TUNESERVE_MAX_EVENT_STREAMS_PER_PROJECT": str(STREAMS),
        "TUNESERVE_EVENT_STREAM_PAUSED_IDLE_SECONDS": "2",
        "TUNESERVE_MAX_CONCURRENT_JOBS": "0"})  # jobs wait queued: nothing trains here
    yield srv
    stop_control_plane(srv, name)


def _paused_job(server: TuneserveServer, key: str | None = None) -> str:
    client = server.client(key)
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(10)]))
    client.fine_tuning.jobs.pause(job.id)
    assert wait_for(client, job.id, ("paused",)).status == "paused"
    return job.id


def _stream(http: httpx.Client, job_id: str) -> httpx.Response:
    return http.stream("GET", f"/fine_tuning/jobs/{job_id}/events",  # type: ignore[return-value]
                       params={"stream": "true"}, timeout=30)


def test_a_project_s_open_streams_are_capped(server: TuneserveServer) -> None:
    job_id = _paused_job(server)
    other_job = _paused_job(server, server.other_key())
    with ExitStack() as held, server.http() as http, server.http(server.other_key()) as other:
        for _ in range(STREAMS):
            assert held.enter_context(_stream(http, job_id)).status_code == 200
        with _stream(http, job_id) as refused:
            assert refused.status_code == 429  # (an open stream would never end its body)
            refused.read()
            error = refused.json()["error"]
            assert (error["param"], error["code"]) == ("stream", "rate_limit_exceeded")
        # Another tenant is not held back by this one's streams.
        with _stream(other, other_job) as theirs:
            assert theirs.status_code == 200
    # Closed streams give their places back.
    with server.http() as http, _stream(http, job_id) as again:
        assert again.status_code == 200


def test_a_paused_job_s_stream_ends_once_idle(server: TuneserveServer) -> None:
    job_id = _paused_job(server)
    started = time.monotonic()
    with server.http() as http, _stream(http, job_id) as stream:
        assert stream.status_code == 200
        lines = []
        for line in stream.iter_lines():  # ends only when the server ends the stream
            lines.append(line)
            if time.monotonic() - started > 20:  # a ping every 15 s: it would never end
                pytest.fail("the paused job's stream stays open")
    assert any(line.startswith("data: ") for line in lines)  # its events were sent first
