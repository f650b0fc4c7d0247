"""`retrieve_future` long polls in process: a client that pipelines (as the cookbook's loops
do) keeps many futures pending at once, and the node must not look in the DB for each of them
every 50 ms, beside the trainer whose CPU it would take."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from storage.models import Project, TinkerFuture
from tests.support.in_process import control_plane_in_process
from training.tinker import futures
from training.tinker.futures import FutureStatus

PENDING = 24


def test_many_pending_futures_cost_one_db_look_per_tick_and_wake_at_their_answer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with control_plane_in_process(request, "sqlite", tmp_path) as plane:
        key = plane.cli("keys", "create", "--project", "pipelined", "--tinker").strip()
        db = plane.services.db
        with db.session() as s:
            project = s.scalar(select(Project).where(Project.name == "pipelined"))
            assert project is not None
            for i in range(PENDING):
                s.add(TinkerFuture(id=f"req-{i}", project_id=project.id, model_id="run-1",
                                   kind="optim_step", status=FutureStatus.PENDING,
                                   created_at=int(time.time()), seq_id=i + 1))
            s.commit()
        statements = 0
        lock = threading.Lock()

        def count(*_: Any) -> None:
            nonlocal statements
            with lock:
                statements += 1

        http = plane.http()

        def poll(i: int) -> tuple[float, Any]:
            t = time.monotonic()
            answer = http.post(plane.root_url + "/api/v1/retrieve_future",
                               headers={"X-API-Key": key}, json={"request_id": f"req-{i}"})
            assert answer.status_code == 200, answer.text
            return time.monotonic() - t, answer.json()

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            with ThreadPoolExecutor(PENDING) as pool:
                polls = [pool.submit(poll, i) for i in range(PENDING)]
                time.sleep(1.5)
                with db.session() as s:
                    futures.finish(s, "req-0", FutureStatus.SUCCEEDED, result={"type": "x"})
                answered_at = time.monotonic()
                first = polls[0].result()
                woke = time.monotonic() - answered_at
                rest = [p.result() for p in polls[1:]]
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        # The answer reaches its long poll within a tick or so of landing.
        assert first[1] == {"type": "x"} and woke < 0.5, woke
        # The others wait out their long poll and are told to try again.
        assert all(r[1]["type"] == "try_again" for r in rest)
        # ~5 s of waiting by 24 polls: a look per tick (~100), not one per poll per tick
        # (~2,400), plus each poll's own look at its start and end.
        assert statements < 400, statements
