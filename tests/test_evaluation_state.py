"""The engine-side evaluation's state on a job (SQLite and PostgreSQL): one node at a time
runs it, a node that died is taken over, failed tries are retried then given up, and what a
tenant sees carries no bookkeeping."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from api.background.evaluator import EngineEvaluator
from api.settings import Settings
from serving.adapters import ModelNotFound
from serving.proxy import Answer
from storage.base_models import DEFAULT_BASE_MODEL
from storage.blob import LocalBlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import file_key
from storage.models import FineTuningJob, Project
from storage.states import IllegalTransition
from tests.support.training import jsonl, sft_example
from training import evaluation_state as ev
from training import jobs


def _succeeded_job(db: Database, base: str = "m", **values: Any) -> str:
    with db.session() as s:
        project = Project(id=new_id("proj-"), name=new_id("p"), created_at=0)
        s.add(project)
        s.flush()
        job = FineTuningJob(
            id=new_id("ftjob-"), project_id=project.id, status=jobs.JobStatus.SUCCEEDED,
            model=base, base_model=base, training_file="file-t", validation_file="file-v",
            seed=1, method={"type": "supervised", "supervised": {"hyperparameters": {}}},
            created_at=0, finished_at=1, step=3, model_name="ft:m:p::abc",
            fine_tuned_model="ft:m:p::abc", result_files=["file-r"],
            evaluation=ev.pending(), **values)
        s.add(job)
    return job.id


def _job(db: Database, job_id: str) -> FineTuningJob:
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        assert job is not None
        return job


def test_one_node_runs_an_evaluation_and_a_dead_nodes_claim_is_taken_over(
        database: Database) -> None:
    job_id = _succeeded_job(database)
    with database.session() as s:
        assert ev.candidates(s, ["m"]) == [job_id] and ev.candidates(s, ["other"]) == []
        assert ev.claim(s, job_id, "node-a", now=100, stale_before=0) is not None
    with database.session() as s:  # a's claim is fresh: b gets nothing
        assert ev.claim(s, job_id, "node-b", now=101, stale_before=50) is None
    assert ev.public(_job(database, job_id)) == {"status": "running"}
    with database.session() as s:  # a went quiet: b takes over
        assert ev.claim(s, job_id, "node-b", now=800, stale_before=150) is not None
    with database.session() as s:  # a, back, can neither renew nor publish
        assert not ev.renew(s, job_id, "node-a", now=801)
        assert not ev.finish(s, job_id, "node-a", {"n_examples": 1}, "file-a")
    with database.session() as s:
        assert ev.finish(s, job_id, "node-b", {"n_examples": 1}, "file-e")
    job = _job(database, job_id)
    assert ev.public(job) == {"status": "completed", "n_examples": 1, "result_file": "file-e"}
    assert job.result_files == ["file-r", "file-e"]
    with database.session() as s:
        assert ev.candidates(s, ["m"]) == []
        assert ev.claim(s, job_id, "node-c", now=10_000, stale_before=9_999) is None


# The transition table, every pair (None: the job has no evaluation).
EVALUATION_STATES = [None, *ev.EvaluationStatus]


def _evaluation(status: ev.EvaluationStatus | None) -> dict[str, Any] | None:
    return None if status is None else {"status": status, "_claim": "node"}


@pytest.mark.parametrize("source", EVALUATION_STATES)
def test_every_evaluation_transition_is_allowed_or_refused_by_the_table(
        source: ev.EvaluationStatus | None) -> None:
    for target in EVALUATION_STATES:
        job = FineTuningJob(evaluation=_evaluation(source))
        if target in ev.TRANSITIONS[source]:
            ev._write(job, _evaluation(target))
            assert ev.status_of(job.evaluation) == target
        else:
            with pytest.raises(IllegalTransition):
                ev._write(job, _evaluation(target))
            assert job.evaluation == _evaluation(source)


def test_finished_evaluations_lead_nowhere_and_every_state_is_reachable() -> None:
    assert not ev.TRANSITIONS[ev.COMPLETED] and not ev.TRANSITIONS[ev.FAILED]
    reachable: set[ev.EvaluationStatus | None] = {None}
    for _ in EVALUATION_STATES:
        reachable |= {t for s in reachable for t in ev.TRANSITIONS[s]}
    assert reachable == set(EVALUATION_STATES)


def test_a_worker_cannot_complete_an_evaluation_the_engine_owns(database: Database) -> None:
    # The worker's success writes its evaluation through the same table: one pending on the
    # engine is not the worker's to complete.
    job_id = _succeeded_job(database)
    with pytest.raises(IllegalTransition):
        ev.completed_by_worker(_job(database, job_id).evaluation, {"score": 1}, "file-e")
    assert ev.completed_by_worker(None, {"score": 1}, "file-e") == {
        "status": "completed", "score": 1, "result_file": "file-e"}


def test_failed_tries_are_retried_then_given_up(database: Database) -> None:
    job_id = _succeeded_job(database)
    for expected in (ev.PENDING, ev.PENDING, ev.FAILED):
        with database.session() as s:
            assert ev.claim(s, job_id, "node", now=1, stale_before=0) is not None
            # Handing it back untried (no engine now) costs no attempt.
            ev.release(s, job_id, "node")
            assert ev.claim(s, job_id, "node", now=1, stale_before=0) is not None
            assert ev.give_up(s, job_id, "node", "The engine failed.", 3) == expected
    assert ev.public(_job(database, job_id)) == {"status": "failed",
                                                 "error": "The engine failed."}


def test_a_job_that_will_never_have_a_model_shows_no_pending_evaluation(
        database: Database) -> None:
    job_id = _succeeded_job(database)
    with database.session() as s:
        job = jobs.get_job(s, job_id)
        assert job is not None
        assert ev.public(job) == {"status": "pending"}
        job.status = jobs.JobStatus.CANCELLED
        assert ev.public(job) is None


class _Lease:
    def __init__(self, model: str) -> None:
        self.served = self.requested = model
        self.cache_salt, self.prefix = "salt", None

    def release(self) -> None:
        pass


class _Adapters:
    """Serves the base only: the fine-tuned model was deleted."""

    async def acquire(self, project_id: str, model: str) -> _Lease:
        if model != DEFAULT_BASE_MODEL:
            raise ModelNotFound(model)
        return _Lease(model)


class _Proxy:
    def __init__(self, status: int) -> None:
        self.status, self.sent = status, 0

    async def complete(self, path: str, body: dict[str, Any], lease: _Lease,
                       request_id: str | None = None) -> Answer:
        self.sent += 1
        return Answer(self.status, {"choices": [{"message": {"content": "7"}}]})


@pytest.mark.parametrize(("proxy_status", "status", "error"), [
    (200, "failed", "The fine-tuned model was deleted before it was evaluated."),
    (500, "pending", None),  # an engine error: tried again later
])
def test_the_engine_evaluator_says_why_an_evaluation_did_not_complete(
        tmp_path: Path, models_dir: Path, proxy_status: int, status: str,
        error: str | None) -> None:
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    store = LocalBlobStore(tmp_path / "blobs")
    job_id = _succeeded_job(db, base=DEFAULT_BASE_MODEL)
    job = _job(db, job_id)
    store.put(file_key(job.project_id, "file-v"), jsonl([sft_example(i) for i in range(3)]))
    settings = Settings(data_dir=tmp_path, models_dir=models_dir, serving_enabled=True)
    proxy = _Proxy(proxy_status)
    evaluator = EngineEvaluator(settings, db, store, _Adapters(), proxy)  # type: ignore[arg-type]
    assert asyncio.run(evaluator.run_once([DEFAULT_BASE_MODEL])) == 1
    if proxy_status == 200:
        assert proxy.sent == 3  # the base answered every example
    evaluation = ev.public(_job(db, job_id))
    assert evaluation == ({"status": status, "error": error} if error else {"status": status})
    assert json.loads(json.dumps(evaluation))  # what the API returns as is
    db.dispose()
