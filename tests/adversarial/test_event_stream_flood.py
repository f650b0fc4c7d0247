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

from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.training import BASE, sft_example, upload, wait_for

STREAMS = 2


@pytest.fixture(scope="module")
def plane(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    with control_plane_in_process(request, "sqlite", tmp_path_factory.mktemp("streams"),
                                  max_event_streams_per_project=STREAMS,
                                  event_stream_paused_idle_seconds=2,
                                  max_concurrent_jobs=0) as plane:  # jobs wait: nothing trains
        yield plane


def _paused_job(plane: InProcessControlPlane, key: str | None = None) -> str:
    client = plane.client(key)
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(10)]))
    client.fine_tuning.jobs.pause(job.id)
    assert wait_for(client, job.id, ("paused",)).status == "paused"
    return job.id


def _stream(http: httpx.Client, job_id: str) -> httpx.Response:
    return http.stream("GET", f"/fine_tuning/jobs/{job_id}/events",  # type: ignore[return-value]
                       params={"stream": "true"}, timeout=30)


def test_a_project_s_open_streams_are_capped(plane: InProcessControlPlane) -> None:
    job_id = _paused_job(plane)
    other_job = _paused_job(plane, plane.other_key())
    with ExitStack() as held, plane.http() as http, plane.http(plane.other_key()) as other:
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
    with plane.http() as http, _stream(http, job_id) as again:
        assert again.status_code == 200


def test_a_paused_job_s_stream_ends_once_idle(plane: InProcessControlPlane) -> None:
    job_id = _paused_job(plane)
    started = time.monotonic()
    with plane.http() as http, _stream(http, job_id) as stream:
        assert stream.status_code == 200
        lines = []
        for line in stream.iter_lines():  # ends only when the server ends the stream
            lines.append(line)
            if time.monotonic() - started > 20:  # a ping every 15 s: it would never end
                pytest.fail("the paused job's stream stays open")
    assert any(line.startswith("data: ") for line in lines)  # its events were sent first
