"""The Tinker API's two 429s, in process: a node with every trainer it may run busy, and a run
with as many requests waiting as it may have. The trainers are a fake executor's (nothing
trains here: what is tested is when a trainer is started and what the client is told)."""

from pathlib import Path

import httpx
import pytest

from tests.support.in_process import control_plane_in_process
from tests.support.training import BASE
from training.executors import ExecutorUnavailable, WorkerInfo, WorkerState
from training.tinker.launch import TinkerTrainers

MAX_PENDING_PER_RUN = 64  # api/tinker/service.py's bound, as the docs state it


class FakeTrainers:
    """An executor whose trainers run until stopped."""

    name = "fake"
    node_prefix = "fake:"

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.stopped: set[tuple[str, int]] = set()
        self.unreachable = False  # as a Ray cluster can be

    def start(self, run_id: str, attempt: int) -> str:
        if self.unreachable:
            raise ExecutorUnavailable("the cluster is unreachable")
        self.started.append((run_id, attempt))
        return "fake"

    def state(self, run_id: str, attempt: int) -> WorkerInfo:
        return WorkerInfo(WorkerState.EXITED if (run_id, attempt) in self.stopped
                          else WorkerState.RUNNING)

    def stop(self, run_id: str, attempt: int, force: bool = False) -> None:
        self.stopped.add((run_id, attempt))

    def forget(self, run_id: str, attempt: int) -> bool:
        return True

    def housekeep(self) -> None:
        pass

    def close(self) -> None:
        pass


def _post(http: httpx.Client, root: str, path: str, body: dict[str, object]) -> httpx.Response:
    return http.post(root + "/api/v1/" + path, json=body)


def test_a_busy_node_and_a_full_run_answer_429_and_keep_the_request(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    models_dir: Path,
) -> None:
    with control_plane_in_process(request, "sqlite", tmp_path, tinker_max_trainers=1,
                                  models_dir=models_dir, train_unserved_bases=True) as plane:
        trainers: TinkerTrainers = plane.services.tinker_trainers
        fake = FakeTrainers()
        monkeypatch.setattr(trainers, "executor", fake)
        key = plane.cli("keys", "create", "--project", "busy", "--tinker").strip()
        http = plane.http()
        del http.headers["Authorization"]
        http.headers["X-API-Key"] = key
        root = plane.root_url
        session = _post(http, root, "create_session", {"sdk_version": "0.38.0"})
        assert session.status_code == 200, session.text
        session_id = session.json()["session_id"]

        def create(seq: int) -> str:
            made = _post(http, root, "create_model", {
                "session_id": session_id, "model_seq_id": seq, "base_model": BASE,
                "lora_config": {"rank": 8}})
            assert made.status_code == 200, made.text
            return str(made.json()["model_id"])

        first, second = create(0), create(1)
        # The first run's trainer took the node's one place; the second run was still made.
        assert fake.started == [(first, 1)]

        def optim(run: str, seq: int) -> httpx.Response:
            return _post(http, root, "optim_step", {
                "model_id": run, "seq_id": seq, "adam_params": {"learning_rate": 1e-4}})

        busy = optim(second, 1)
        assert busy.status_code == 429, busy.text
        assert busy.json()["error"]["code"] == "trainers_busy"
        # Once the first trainer ends, the SDK's retry of the same request starts the second
        # run's trainer and answers the same future.
        fake.stopped.add((first, 1))
        again = optim(second, 1)
        assert again.status_code == 200, again.text
        assert fake.started[-1] == (second, 1)
        assert optim(second, 1).json()["request_id"] == again.json()["request_id"]

        # A run holds at most MAX_PENDING_PER_RUN unanswered requests; past it, 429.
        for seq in range(2, MAX_PENDING_PER_RUN + 1):
            assert optim(second, seq).status_code == 200
        full = optim(second, MAX_PENDING_PER_RUN + 1)
        assert full.status_code == 429, full.text
        assert full.json()["error"]["code"] == "too_many_requests"
        assert str(MAX_PENDING_PER_RUN) in full.json()["error"]["message"]

        # With the cluster unreachable a run is still made; its requests are answered 503
        # (the SDK retries), and the first retry after the cluster is back starts its trainer.
        fake.stopped.add((second, 1))
        fake.unreachable = True
        third = create(2)
        unavailable = optim(third, 1)
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.json()["error"]["code"] == "trainers_unavailable"
        fake.unreachable = False
        assert optim(third, 1).status_code == 200
        assert fake.started[-1][0] == third
