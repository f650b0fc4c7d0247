"""A tenant floods the job queue to stop training for everyone else (review H2).

Tenant A queues 1,200 jobs on one small file. The scheduler used to read only the 1000 oldest
queued jobs of all projects and share them out round-robin inside that window, so tenant B's
job, queued after A's, was never seen: with A at its running limit nothing started at all, and
without a limit B waited behind A's whole backlog. File validations were taken first come,
first served, so A's hundred validations each held a slot before B's one got any. A's
backlog is now bounded (`TUNESERVE_MAX_QUEUED_JOBS_PER_PROJECT`, a 429), the scheduler reads
each project's oldest few jobs, and a free validation slot goes to the project validating
fewest files."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import insert

from storage.blob import LocalBlobStore
from storage.db import Database
from storage.ids import new_id
from storage.models import FineTuningJob, Project
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.training import BASE, sft_example, upload
from training import jobs
from training.executors import WorkerInfo, WorkerState
from training.jobs import JobStatus
from training.scheduler import STARTS_PER_TICK, Scheduler
from training.settings import TrainingSettings

FLOOD = 1200
QUEUE_LIMIT = 3


class FakeExecutor:
    """A node that starts whatever it is asked to at once and reports it running."""

    name = "fake"
    node_prefix = "fake:node:"

    def __init__(self) -> None:
        self.started: list[str] = []
        self.states: dict[tuple[str, int], WorkerInfo] = {}

    def start(self, job_id: str, attempt: int) -> str:
        self.started.append(job_id)
        self.states[(job_id, attempt)] = WorkerInfo(WorkerState.RUNNING)
        return self.node_prefix + job_id

    def state(self, job_id: str, attempt: int) -> WorkerInfo:
        return self.states.get((job_id, attempt), WorkerInfo(WorkerState.UNKNOWN))

    def capacity(self) -> int | None:
        return None

    def placeable(self, job_id: str, attempt: int) -> bool:
        return True

    def stop(self, job_id: str, attempt: int, force: bool = False) -> None:
        pass

    def forget(self, job_id: str, attempt: int) -> bool:
        return True

    def close(self) -> None:
        pass

    def housekeep(self) -> None:
        pass

    def log_tail(self, job_id: str, attempt: int, max_chars: int = 2000) -> str:
        return ""


def _project(db: Database, name: str) -> str:
    project_id = new_id("proj_")
    with db.session() as s:
        s.add(Project(id=project_id, name=f"{name}-{new_id('')}", created_at=0))
    return project_id


def _jobs(db: Database, project_id: str, count: int, status: str,
          **values: object) -> list[str]:
    """`count` jobs of the project in `status`, inserted at once (oldest first)."""
    ids = [new_id("ftjob-") for _ in range(count)]
    rows = [{"id": job_id, "project_id": project_id, "status": status, "model": BASE,
             "base_model": BASE, "training_file": "file-shared", "seed": 1,
             "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
             "created_at": 0, "model_name": f"ft:{BASE}:a::{job_id[-8:]}",
             "result_files": [], **values} for job_id in ids]
    with db.session() as s:
        s.execute(insert(FineTuningJob), rows)
    return ids


def _status(db: Database, job_id: str) -> str:
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        assert job is not None
        return job.status


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


# The case: A at its running limit with 1,200 jobs queued.

def test_a_tenant_at_its_running_limit_with_1200_queued_jobs_does_not_stall_another(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    settings = TrainingSettings(data_dir=tmp_path, max_running_jobs_per_project=2,
                                max_concurrent_jobs=4)
    executor = FakeExecutor()
    a, b = _project(database, "a"), _project(database, "b")
    for job_id in _jobs(database, a, 2, JobStatus.RUNNING, attempt=1, heartbeat_at=time.time(),
                        worker=executor.node_prefix + "a"):
        executor.states[(job_id, 1)] = WorkerInfo(WorkerState.RUNNING)
    flood = _jobs(database, a, FLOOD, JobStatus.QUEUED)
    [b_job] = _jobs(database, b, 1, JobStatus.QUEUED)

    Scheduler(settings, database, store, executor).tick()

    assert executor.started == [b_job]
    assert _status(database, b_job) == JobStatus.RUNNING
    assert _status(database, flood[0]) == JobStatus.QUEUED


def test_another_tenants_job_starts_in_the_next_tick_not_behind_the_backlog(
    database: Database, store: LocalBlobStore, tmp_path: Path
) -> None:
    # No running limit: A's backlog is taken in order, but B's job is among the first taken,
    # and a tick still starts no more than its bound.
    settings = TrainingSettings(data_dir=tmp_path, max_concurrent_jobs=100)
    executor = FakeExecutor()
    a, b = _project(database, "a"), _project(database, "b")
    flood = _jobs(database, a, FLOOD, JobStatus.QUEUED)
    [b_job] = _jobs(database, b, 1, JobStatus.QUEUED)

    Scheduler(settings, database, store, executor).tick()

    assert len(executor.started) == STARTS_PER_TICK
    assert executor.started[:2] == [flood[0], b_job]
    assert executor.started[2:] == flood[1:STARTS_PER_TICK - 1]


# Validation slots.

class HeldValidations(Scheduler):
    """A scheduler whose validations hold their slot until the test lets each one end (then
    the job is queued, as a real validation that passed leaves it)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.taken: list[str] = []
        self.release: dict[str, threading.Event] = {}

    def _validate(self, job: FineTuningJob, attempt: int) -> None:
        self.taken.append(job.id)
        self.release.setdefault(job.id, threading.Event()).wait(30)
        with self.db.session() as s:
            jobs.transition(s, job.id, (JobStatus.VALIDATING_FILES,), attempt,
                            status=JobStatus.QUEUED, heartbeat_at=None)

    def taken_when(self, count: int) -> list[str]:
        """The jobs whose validation began, once `count` have."""
        deadline = time.monotonic() + 30
        while len(self.taken) < count:
            assert time.monotonic() < deadline, f"only {self.taken} were validated"
            time.sleep(0.01)
        return list(self.taken)

    def finish(self, job_id: str) -> None:
        self.release.setdefault(job_id, threading.Event()).set()
        deadline = time.monotonic() + 30
        while job_id in self._validating:
            assert time.monotonic() < deadline, f"the validation of {job_id} did not end"
            time.sleep(0.01)


@pytest.fixture
def held(database: Database, store: LocalBlobStore, tmp_path: Path) -> Iterator[HeldValidations]:
    settings = TrainingSettings(data_dir=tmp_path, validation_workers=2)
    scheduler = HeldValidations(settings, database, store, FakeExecutor())
    yield scheduler
    for job_id in scheduler.taken:
        scheduler.finish(job_id)
    scheduler.stop()


def test_validation_slots_are_shared_across_projects(
    database: Database, held: HeldValidations
) -> None:
    a, b = _project(database, "a"), _project(database, "b")
    flood = _jobs(database, a, 100, JobStatus.VALIDATING_FILES)
    [b_job] = _jobs(database, b, 1, JobStatus.VALIDATING_FILES)

    held.dispatch_validations()

    assert set(held.taken_when(2)) == {flood[0], b_job}


def test_a_project_holding_every_validation_slot_gives_the_next_free_one_up(
    database: Database, held: HeldValidations
) -> None:
    # Alone, A may use every slot (none sits idle), but once B waits, the first slot that
    # frees up is B's, not A's next one.
    a, b = _project(database, "a"), _project(database, "b")
    flood = _jobs(database, a, 100, JobStatus.VALIDATING_FILES)
    held.dispatch_validations()
    assert set(held.taken_when(2)) == set(flood[:2])
    [b_job] = _jobs(database, b, 1, JobStatus.VALIDATING_FILES)

    held.finish(flood[0])
    held.dispatch_validations()

    assert held.taken_when(3)[2] == b_job
    assert _status(database, flood[2]) == JobStatus.VALIDATING_FILES


# TUNESERVE_MAX_QUEUED_JOBS_PER_PROJECT, as a client sees it.

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def small_queue(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    """A control plane whose projects may each have QUEUE_LIMIT jobs waiting. Its scheduler
    ticks once, at start: the jobs made here stay `validating_files` (waiting) throughout."""
    with control_plane_in_process(request, request.param,
                                  tmp_path_factory.mktemp(f"queue-{request.param}"),
                                  max_queued_jobs_per_project=QUEUE_LIMIT,
                                  scheduler_interval=3600) as plane:
        yield plane


def test_a_project_cannot_queue_more_jobs_than_the_limit(
        small_queue: InProcessControlPlane) -> None:
    flooder = small_queue.client()
    training = upload(flooder, [sft_example(i) for i in range(10)])
    waiting = [flooder.fine_tuning.jobs.create(model=BASE, training_file=training)
               for _ in range(QUEUE_LIMIT)]
    assert {job.status for job in waiting} == {"validating_files"}

    with pytest.raises(openai.RateLimitError) as refused:
        flooder.fine_tuning.jobs.create(model=BASE, training_file=training)
    error = refused.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "rate_limit_error"
    assert "TUNESERVE_MAX_QUEUED_JOBS_PER_PROJECT" in error.message
    assert f"is {QUEUE_LIMIT}" in error.message
    # Retrying at once cannot help: the client is told not to.
    assert error.response.headers["x-should-retry"] == "false"
    assert len(flooder.fine_tuning.jobs.list(limit=100).data) == QUEUE_LIMIT

    # Another project is not held back by the flooder's queue.
    other = small_queue.client(small_queue.other_key())
    own = upload(other, [sft_example(i) for i in range(10)])
    assert other.fine_tuning.jobs.create(model=BASE, training_file=own).status == (
        "validating_files")

    # The limit counts jobs waiting, not jobs ever made: a cancelled one makes room.
    flooder.fine_tuning.jobs.cancel(waiting[0].id)
    assert flooder.fine_tuning.jobs.create(model=BASE, training_file=training).status == (
        "validating_files")
    with pytest.raises(openai.RateLimitError):
        flooder.fine_tuning.jobs.create(model=BASE, training_file=training)
