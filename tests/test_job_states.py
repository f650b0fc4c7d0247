"""The job state machine and the scheduler, on a real DB (SQLite and PostgreSQL) with a fake
executor: transitions, fencing, claims by several schedulers, fairness, recovery, cancel,
pause, placement. The real workers are exercised by the end-to-end tests beside these."""

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import StatementError

from storage.blob import LocalBlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import file_key, job_prefix
from storage.models import File, FineTuningJob, JobEvent, Project
from training import jobs
from training.executors import ExecutorUnavailable, WorkerInfo, WorkerState
from training.executors.base import EXIT_OUTAGE
from training.jobs import TRANSITIONS, IllegalTransition, JobStatus
from training.scheduler import Scheduler, fair_order
from training.settings import TrainingSettings

ALL = list(JobStatus)


class FakeExecutor:
    """Records what the scheduler asks; its workers' states are set by the test."""

    name = "fake"

    def __init__(self, node_prefix: str | None = "fake:node:") -> None:
        self.node_prefix = node_prefix
        self.started: list[tuple[str, int]] = []
        self.stopped: list[tuple[str, int, bool]] = []
        self.forgotten: list[tuple[str, int]] = []
        self.states: dict[tuple[str, int], WorkerInfo] = {}
        self.unavailable = False
        self.can_place = True
        self.refuse_forget = False
        self.slots: int | None = None  # the cluster's capacity (None: unbounded)

    def start(self, job_id: str, attempt: int) -> str:
        if self.unavailable:
            raise ExecutorUnavailable("cluster unreachable")
        self.started.append((job_id, attempt))
        self.states[(job_id, attempt)] = WorkerInfo(WorkerState.RUNNING)
        return f"{self.node_prefix or 'fake:'}{job_id}"

    def state(self, job_id: str, attempt: int) -> WorkerInfo:
        return self.states.get((job_id, attempt), WorkerInfo(WorkerState.UNKNOWN))

    def capacity(self) -> int | None:
        return self.slots

    def placeable(self, job_id: str, attempt: int) -> bool:
        return self.can_place

    def stop(self, job_id: str, attempt: int, force: bool = False) -> None:
        self.stopped.append((job_id, attempt, force))

    def forget(self, job_id: str, attempt: int) -> bool:
        self.forgotten.append((job_id, attempt))
        return not self.refuse_forget

    def close(self) -> None:
        pass

    def housekeep(self) -> None:
        pass

    def log_tail(self, job_id: str, attempt: int, max_chars: int = 2000) -> str:
        return "Traceback: out of memory"


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def _settings(tmp_path: Path, **values: object) -> TrainingSettings:
    return TrainingSettings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def _project(db: Database, name: str = "p") -> str:
    with db.session() as s:
        pid = new_id("proj_")
        s.add(Project(id=pid, name=name + new_id(""), created_at=0))
    return pid


def _job(db: Database, project_id: str, status: str = JobStatus.QUEUED, **values: object) -> str:
    with db.session() as s:
        fields: dict[str, object] = {
            "model": "m", "training_file": "file-x", "seed": 1,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            "created_at": 0, "model_name": "ft:m:p::abc", "result_files": [], **values}
        fields.setdefault("base_model", fields["model"])
        job = FineTuningJob(id=new_id("ftjob-"), project_id=project_id, status=status,
                            **fields)
        s.add(job)
    return job.id


def _get(db: Database, job_id: str) -> FineTuningJob:
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        assert job is not None
        return job


def _messages(db: Database, job_id: str) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)
                              .order_by(JobEvent.seq)))


# The transition table, every pair.

@pytest.mark.parametrize("source", ALL)
def test_every_transition_is_allowed_or_refused_by_the_table(
    source: JobStatus, database: Database
) -> None:
    project = _project(database)
    for target in ALL:
        job_id = _job(database, project, source)
        with database.session() as s:
            if target in TRANSITIONS[source]:
                assert jobs.transition(s, job_id, (source,), status=target)
            else:
                with pytest.raises(IllegalTransition):
                    jobs.transition(s, job_id, (source,), status=target)
        assert _get(database, job_id).status == (target if target in TRANSITIONS[source]
                                                 else source)


def test_terminal_states_lead_nowhere_and_every_state_is_reachable() -> None:
    assert all(not TRANSITIONS[s] for s in jobs.TERMINAL)
    reachable = {JobStatus.VALIDATING_FILES}
    for _ in ALL:
        reachable |= {t for s in reachable for t in TRANSITIONS[s]}
    assert reachable == set(ALL)


def test_the_status_column_is_typed_by_the_enum(database: Database) -> None:
    # Stored as the enum's string (no migration), read back as the enum; a string that is no
    # state never reaches the column.
    job_id = _job(database, _project(database))
    assert type(_get(database, job_id).status) is JobStatus
    with database.session() as s:
        stored = s.execute(text("SELECT status FROM fine_tuning_jobs WHERE id = :id"),
                           {"id": job_id}).scalar_one()
        assert type(stored) is str and stored == "queued"
    with database.session() as s, pytest.raises(StatementError, match="'finished'"):
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id)
                  .values(status="finished"))
    assert _get(database, job_id).status == JobStatus.QUEUED


def test_a_refused_cancel_names_the_status_the_job_has_now(
        database: Database, tmp_path: Path) -> None:
    from api.errors import APIError
    from api.fine_tuning.jobs.service import cancel_job

    job_id = _job(database, _project(database))
    with database.session() as s:
        job = jobs.get_job(s, job_id)  # read as queued, as the route reads it
        assert job is not None
        with database.session() as other:  # its validation fails meanwhile
            other.execute(update(FineTuningJob).where(FineTuningJob.id == job_id)
                          .values(status=JobStatus.FAILED))
        with pytest.raises(APIError) as refused:
            cancel_job(s, LocalBlobStore(tmp_path), job)
    assert refused.value.status == 409
    assert f"Job {job_id} is failed; it cannot be cancelled." == refused.value.message
    assert _get(database, job_id).status == JobStatus.FAILED


def test_a_stale_attempt_cannot_write(database: Database) -> None:
    job_id = _job(database, _project(database))
    with database.session() as s:
        first = jobs.take(s, job_id, (JobStatus.QUEUED,), status=JobStatus.RUNNING)
    assert first == 1
    with database.session() as s:  # recovered: back to queued, then taken again
        assert jobs.transition(s, job_id, (JobStatus.RUNNING,), first, status=JobStatus.QUEUED)
        second = jobs.take(s, job_id, (JobStatus.QUEUED,), status=JobStatus.RUNNING)
    assert second == 2
    with database.session() as s:
        assert not jobs.holds(s, job_id, first)
        assert not jobs.transition(s, job_id, jobs.WORKING, first, status=JobStatus.SUCCEEDED)
        assert not jobs.fail(s, job_id, "x", "y", attempt=first)
        assert jobs.holds(s, job_id, second)
    assert _get(database, job_id).status == JobStatus.RUNNING


# Claims.

def test_two_schedulers_start_each_job_exactly_once(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, max_concurrent_jobs=100)
    project = _project(database)
    ids = {_job(database, project) for _ in range(10)}
    a, b = FakeExecutor(), FakeExecutor()
    sa, sb = Scheduler(settings, database, store, a), Scheduler(settings, database, store, b)
    import threading

    threads = [threading.Thread(target=sch.start_queued) for sch in (sa, sb, sa, sb)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = a.started + b.started
    assert sorted(j for j, _ in started) == sorted(ids)
    assert all(attempt == 1 for _, attempt in started)
    assert all(_get(database, j).status == JobStatus.RUNNING for j in ids)


def test_the_node_limit_counts_this_nodes_workers(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    project = _project(database)
    for _ in range(3):
        _job(database, project)
    executor = FakeExecutor()
    scheduler = Scheduler(_settings(tmp_path, max_concurrent_jobs=2), database, store, executor)
    scheduler.start_queued()
    scheduler.start_queued()
    assert len(executor.started) == 2
    # A cluster executor has no node limit: the cluster's resources decide.
    cluster = FakeExecutor(node_prefix=None)
    Scheduler(_settings(tmp_path, max_concurrent_jobs=2), database, store, cluster).start_queued()
    assert len(cluster.started) == 1


def test_a_cluster_gets_no_more_jobs_than_it_can_run_at_once(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    # Ray fails a job that waits 15 min for room: the rest wait in `queued` instead.
    project = _project(database)
    ids = [_job(database, project) for _ in range(5)]
    cluster = FakeExecutor(node_prefix=None)
    cluster.slots = 2
    scheduler = Scheduler(_settings(tmp_path), database, store, cluster)
    scheduler.start_queued()
    scheduler.start_queued()
    assert len(cluster.started) == 2
    assert [_get(database, j).status for j in ids].count(JobStatus.QUEUED) == 3
    with database.session() as s:
        jobs.transition(s, cluster.started[0][0], jobs.WORKING, status=JobStatus.SUCCEEDED)
    scheduler.start_queued()
    assert len(cluster.started) == 3
    # No room anywhere, ever: the job is let through to fail `no_capacity` when Ray cannot
    # place it, rather than wait in `queued` forever.
    cluster.slots = 0
    scheduler.start_queued()
    assert len(cluster.started) == 5


def test_runnable_jobs_are_taken_round_robin_across_projects() -> None:
    queued = [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]
    assert fair_order(queued, {}, 0) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # A project already running jobs comes after those that run none.
    assert fair_order(queued, {"A": 1}, 0)[:3] == ["b1", "c1", "a1"]
    # At most 1 running per project: A is at its limit already.
    assert fair_order(queued, {"A": 1}, 1) == ["b1", "c1"]


def test_an_unreachable_cluster_leaves_the_job_queued(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    job_id = _job(database, _project(database))
    executor = FakeExecutor()
    executor.unavailable = True
    scheduler = Scheduler(_settings(tmp_path), database, store, executor)
    scheduler.start_queued()
    assert _get(database, job_id).status == JobStatus.QUEUED
    executor.unavailable = False
    scheduler.start_queued()
    assert executor.started == [(job_id, 2)]


# Reconciling with the executor.

def _running(database: Database, store: LocalBlobStore, tmp_path: Path,
             **settings: object) -> tuple[Scheduler, FakeExecutor, str]:
    project = _project(database)
    job_id = _job(database, project)
    executor = FakeExecutor()
    scheduler = Scheduler(_settings(tmp_path, **settings), database, store, executor)
    scheduler.start_queued()
    return scheduler, executor, job_id


def test_a_lost_worker_is_replaced_then_the_job_fails_clearly(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path, max_job_recoveries=1)
    job = _get(database, job_id)
    store.put(job_prefix(job.project_id, job_id) + "state/a1-step2/optimizer.pt", b"x")
    executor.states[(job_id, 1)] = WorkerInfo(WorkerState.EXITED, -9)
    scheduler.reconcile()
    job = _get(database, job_id)
    assert (job.status, job.recoveries, job.worker) == (JobStatus.QUEUED, 1, None)
    assert any("interrupted (the worker exited with code -9)" in m
               for m in _messages(database, job_id))
    scheduler.start_queued()
    assert executor.started[-1] == (job_id, 2)
    executor.states[(job_id, 2)] = WorkerInfo(WorkerState.EXITED, 1)
    scheduler.reconcile()
    job = _get(database, job_id)
    assert job.status == JobStatus.FAILED and job.error["code"] == "worker_lost"  # type: ignore[index]
    assert "2 times" in job.error["message"]  # type: ignore[index]
    assert "Last output of the worker:\nTraceback: out of memory" in _messages(database, job_id)
    # A failed job keeps no resumable state.
    assert store.list_keys(job_prefix(job.project_id, job_id)) == []


def test_a_worker_stopped_by_an_outage_waits_it_out_without_using_up_recoveries(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path, max_job_recoveries=1,
                                           outage_retry_seconds=1.0)
    job = _get(database, job_id)
    store.put(job_prefix(job.project_id, job_id) + "state/a1-step2/optimizer.pt", b"x")
    for attempt in (1, 2, 3):  # more outages than recoveries allowed: the job lives on
        executor.states[(job_id, attempt)] = WorkerInfo(WorkerState.EXITED, EXIT_OUTAGE)
        scheduler.reconcile()
        job = _get(database, job_id)
        assert (job.status, job.recoveries) == (JobStatus.QUEUED, 0)
        scheduler.start_queued()  # not yet: the outage may still be on
        assert executor.started[-1] == (job_id, attempt)
        time.sleep(1.05)
        scheduler.start_queued()
        assert executor.started[-1] == (job_id, attempt + 1)
    assert sum("the storage or the database was unreachable" in m
               for m in _messages(database, job_id)) == 3
    assert store.list_keys(job_prefix(job.project_id, job_id))  # its saved state is kept


def test_a_silent_worker_elsewhere_is_recovered_only_after_the_heartbeat_timeout(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path,
                                           worker_heartbeat_timeout=30)
    executor.states.clear()  # e.g. this API restarted: the worker is not its own
    scheduler.reconcile()
    assert _get(database, job_id).status == JobStatus.RUNNING
    with database.session() as s:
        jobs.transition(s, job_id, (JobStatus.RUNNING,), heartbeat_at=time.time() - 31)
    scheduler.reconcile()
    assert _get(database, job_id).status == JobStatus.QUEUED


def test_a_pausing_job_whose_worker_ended_is_paused(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path)
    with database.session() as s:
        assert jobs.transition(s, job_id, (JobStatus.RUNNING,), status=JobStatus.PAUSING)
    scheduler.reconcile()
    assert executor.stopped == [(job_id, 1, False)]  # SIGTERM: save, then stop
    executor.states[(job_id, 1)] = WorkerInfo(WorkerState.EXITED, None)
    scheduler.reconcile()
    assert _get(database, job_id).status == JobStatus.PAUSED


def test_a_cancelled_job_is_stopped_then_its_outputs_removed(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path, cancel_grace_seconds=0)
    job = _get(database, job_id)
    key = job_prefix(job.project_id, job_id) + "state/a1-step1.manifest.json"
    store.put(key, b"{}")
    with database.session() as s:
        assert jobs.transition(s, job_id, jobs.ACTIVE, status=JobStatus.CANCELLED)
    scheduler.reconcile()
    scheduler.reconcile()
    assert executor.stopped[0] == (job_id, 1, False) and executor.stopped[-1][2] is True
    assert store.exists(key)
    executor.states[(job_id, 1)] = WorkerInfo(WorkerState.EXITED, -15)
    scheduler.reconcile()
    assert not store.exists(key)
    assert _get(database, job_id).worker is None
    assert (job_id, 1) in executor.forgotten


def test_an_ended_worker_the_executor_could_not_forget_is_released_on_a_later_tick(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path)
    with database.session() as s:
        assert jobs.transition(s, job_id, (JobStatus.RUNNING,), status=JobStatus.SUCCEEDED)
    executor.states[(job_id, 1)] = WorkerInfo(WorkerState.EXITED, 0)
    executor.refuse_forget = True  # e.g. Ray answers 500 just after the job ended
    scheduler.reconcile()
    assert _get(database, job_id).worker is not None
    executor.refuse_forget = False
    scheduler.reconcile()
    assert _get(database, job_id).worker is None
    assert executor.forgotten == [(job_id, 1), (job_id, 1)]


def test_a_job_no_node_can_run_fails_after_the_placement_timeout(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    scheduler, executor, job_id = _running(database, store, tmp_path, ray_placement_timeout=5)
    executor.states[(job_id, 1)] = WorkerInfo(WorkerState.PENDING)
    scheduler.reconcile()
    assert _get(database, job_id).status == JobStatus.RUNNING
    with database.session() as s:
        jobs.transition(s, job_id, (JobStatus.RUNNING,), heartbeat_at=time.time() - 6)
    scheduler.reconcile()  # waiting for a busy node that could run it: it waits on
    assert _get(database, job_id).status == JobStatus.RUNNING
    executor.can_place = False
    scheduler.reconcile()
    job = _get(database, job_id)
    assert job.status == JobStatus.FAILED and job.error["code"] == "no_capacity"  # type: ignore[index]
    assert "resources" in job.error["message"]  # type: ignore[index]


# Validation off the loop.

def _training_file(database: Database, store: LocalBlobStore, project: str,
                   lines: list[bytes]) -> str:
    file_id = new_id("file-")
    store.put(file_key(project, file_id), b"".join(lines))
    with database.session() as s:
        s.add(File(id=file_id, project_id=project, filename="t.jsonl", purpose="fine-tune",
                   bytes=1, status="processed", created_at=0))
    return file_id


def _example(i: int) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                    {"role": "assistant", "content": f"a{i}"}]}).encode() + b"\n"


def test_a_validation_that_crashes_fails_only_its_own_job(
    database: Database, store: LocalBlobStore, tmp_path: Path, models_dir: Path
) -> None:
    from storage.base_models import DEFAULT_BASE_MODEL

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "tokenizer.json").write_text("not a tokenizer")
    (broken / "tokenizer_config.json").write_text("{}")
    settings = _settings(tmp_path, models_dir=models_dir, base_models=json.dumps(
        [{"name": "broken", "path": str(broken)}]))
    project = _project(database)
    good_file = _training_file(database, store, project, [_example(i) for i in range(10)])
    poison = _job(database, project, JobStatus.VALIDATING_FILES, model="broken",
                  training_file=good_file)
    good = _job(database, project, JobStatus.VALIDATING_FILES, model=DEFAULT_BASE_MODEL,
                training_file=good_file)
    scheduler = Scheduler(settings, database, store, FakeExecutor())
    scheduler.dispatch_validations()
    deadline = time.monotonic() + 60
    while {_get(database, poison).status, _get(database, good).status} & {
            JobStatus.VALIDATING_FILES}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    failed = _get(database, poison)
    assert failed.status == JobStatus.FAILED
    assert failed.error["code"] == "validation_error"  # type: ignore[index]
    assert "broken-model" not in failed.error["message"]  # type: ignore[index]
    assert _get(database, good).status == JobStatus.QUEUED
    scheduler.stop()


def test_a_validation_past_its_time_limit_fails_its_job_clearly(
    database: Database, store: LocalBlobStore, tmp_path: Path, models_dir: Path
) -> None:
    from storage.base_models import DEFAULT_BASE_MODEL

    settings = _settings(tmp_path, models_dir=models_dir, validation_timeout_seconds=0)
    project = _project(database)
    training = _training_file(database, store, project, [_example(i) for i in range(10)])
    job_id = _job(database, project, JobStatus.VALIDATING_FILES, model=DEFAULT_BASE_MODEL,
                  training_file=training)
    scheduler = Scheduler(settings, database, store, FakeExecutor())
    scheduler.dispatch_validations()
    deadline = time.monotonic() + 60
    while _get(database, job_id).status == JobStatus.VALIDATING_FILES:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    failed = _get(database, job_id)
    assert failed.status == JobStatus.FAILED
    assert (failed.error["code"], failed.error["param"]) == (  # type: ignore[index]
        "validation_timeout", "training_file")
    scheduler.stop()


def test_a_job_paused_while_validating_is_validated_again_on_resume(database: Database) -> None:
    from api.fine_tuning.jobs import service

    project = _project(database)
    validating = _job(database, project, JobStatus.VALIDATING_FILES)
    validated = _job(database, project, JobStatus.QUEUED, n_examples=10)
    for job_id in (validating, validated):
        with database.session() as s:
            service.pause_job(s, _get(database, job_id))
        assert _get(database, job_id).status == JobStatus.PAUSED
        with database.session() as s:
            service.resume_job(s, _get(database, job_id))
    assert _get(database, validating).status == JobStatus.VALIDATING_FILES
    assert _get(database, validated).status == JobStatus.QUEUED


def test_pause_answers_pausing_at_once_for_a_running_job(database: Database) -> None:
    from api.errors import APIError
    from api.fine_tuning.jobs import service

    job_id = _job(database, _project(database), JobStatus.RUNNING)
    with database.session() as s:
        service.pause_job(s, _get(database, job_id))
    assert _get(database, job_id).status == JobStatus.PAUSING
    with database.session() as s, pytest.raises(APIError) as err:
        service.pause_job(s, _get(database, job_id))
    assert err.value.status == 409
