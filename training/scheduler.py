"""Moves jobs along: validates files (off the loop, each job on its own, round-robin across
projects), starts queued jobs on the executor (round-robin across projects, each project's
oldest first, bounded), reconciles what the executor reports with the DB and recovers jobs
whose worker was lost. Runs in every API process; all of its state is in the DB, and every
claim is a conditional UPDATE that bumps the job's attempt, so any number of schedulers on
one PostgreSQL divide the work and none starts a job twice."""

import importlib.util
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import Session

from storage.base_models import base_models
from storage.blob import BlobNotFound, BlobStore
from storage.db import Database
from storage.keys import file_key
from storage.models import FineTuningJob
from storage.redact import redact
from training import jobs
from training.data import read_lines
from training.executors import Executor, ExecutorUnavailable, WorkerInfo, WorkerState
from training.executors.base import EXIT_OUTAGE
from training.hyperparameters import ModelShape, resolve
from training.jobs import JobStatus
from training.settings import TrainingSettings
from training.tokens import token_counter
from training.validation import DatasetError, validate_training_file

log = logging.getLogger("tuneserve.scheduler")

# A validation renews its lease this often; one not renewed for VALIDATION_LEASE seconds was
# abandoned (its API process died) and another scheduler takes the job.
VALIDATION_RENEW = 5.0
VALIDATION_LEASE = 30.0
# Most jobs one tick starts: the rest wait for the next tick.
STARTS_PER_TICK = 16


class Abandoned(Exception):
    """The validation no longer holds its job (paused, cancelled, taken over)."""


class Scheduler:
    def __init__(
        self, settings: TrainingSettings, db: Database, store: BlobStore, executor: Executor
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.executor = executor
        self._cancel_seen: dict[tuple[str, int], float] = {}
        self._stop_sent: set[tuple[str, int]] = set()
        self._validating: set[str] = set()
        self._validations = ThreadPoolExecutor(settings.validation_workers,
                                               thread_name_prefix="validation")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._validations.shutdown(wait=False, cancel_futures=True)
        self.executor.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.settings.scheduler_interval)

    def tick(self) -> None:
        # Each step on its own: one failing (a DB blip, an unreachable cluster) does not
        # hold up the others.
        for step in (self.reconcile, self.dispatch_validations, self.start_queued):
            try:
                step()
            except Exception:
                log.exception("scheduler step %s failed; retrying", step.__name__)

    # validating_files -> queued | failed, in the validation pool

    def dispatch_validations(self) -> None:
        """Takes pending validations round-robin across projects, those validating fewest
        files anywhere first: one project's backlog (a hundred jobs on one large file) takes
        a free slot only when no other project is waiting for one, so another project waits
        at most for one validation to end, never behind the whole backlog."""
        free = self.settings.validation_workers - len(self._validating)
        if free <= 0:
            return
        now = time.time()
        stale = now - VALIDATION_LEASE
        with self.db.session() as s:
            validating = dict(s.execute(
                select(FineTuningJob.project_id, func.count())
                .where(FineTuningJob.status == JobStatus.VALIDATING_FILES,
                       FineTuningJob.heartbeat_at >= stale)
                .group_by(FineTuningJob.project_id)).all())
            pending = oldest_per_project(s, free, (
                FineTuningJob.status == JobStatus.VALIDATING_FILES,
                FineTuningJob.id.not_in(self._validating) if self._validating else true(),
                (FineTuningJob.heartbeat_at.is_(None)) | (FineTuningJob.heartbeat_at < stale),
            ))
            chosen = fair_order(pending, validating, 0)[:free]
            loaded = {job.id: job for job in s.scalars(
                select(FineTuningJob).where(FineTuningJob.id.in_(chosen)))}
        for job in (loaded[job_id] for job_id in chosen if job_id in loaded):
            with self.db.session() as s:
                attempt = jobs.take(s, job.id, (JobStatus.VALIDATING_FILES,),
                                    stale_before=stale, heartbeat_at=now)
            if attempt is None:
                continue  # another scheduler has it
            self._validating.add(job.id)
            self._validations.submit(self._validate_guarded, job, attempt)

    def _validate_guarded(self, job: FineTuningJob, attempt: int) -> None:
        try:
            self._validate(job, attempt)
        except Abandoned:
            log.info("validation of %s abandoned: the job moved on", job.id)
        except Exception:
            log.exception("validation of %s failed", job.id)
            with self.db.session() as s:
                jobs.fail(s, job.id, "validation_error",
                          "The training files could not be validated because of an internal "
                          "error; try again, or contact the operator if it persists.",
                          expect=(JobStatus.VALIDATING_FILES,), attempt=attempt)
        finally:
            self._validating.discard(job.id)

    def _lines(self, job: FineTuningJob, attempt: int, file_id: str,
               deadline: float) -> Iterator[bytes]:
        """A file's lines, renewing the validation's lease as it goes and enforcing its
        time limit."""
        renewed = time.monotonic()
        for line in read_lines(self.store, file_key(job.project_id, file_id)):
            now = time.monotonic()
            if now > deadline:
                raise DatasetError(
                    "validation_timeout", "Validating the training files took longer than "
                    f"{self.settings.validation_timeout_seconds:.0f} s; use a smaller file.",
                    "training_file" if file_id == job.training_file else "validation_file")
            if now - renewed > VALIDATION_RENEW:
                renewed = now
                with self.db.session() as s:
                    if not jobs.transition(s, job.id, (JobStatus.VALIDATING_FILES,), attempt,
                                           heartbeat_at=time.time()):
                        raise Abandoned(job.id)
            yield line

    def _validate(self, job: FineTuningJob, attempt: int) -> None:
        spec = base_models(self.settings).get(job.base_model)
        method = job.method["type"]
        deadline = time.monotonic() + self.settings.validation_timeout_seconds
        param = "training_file"
        try:
            if spec is None or not spec.prepared:
                raise DatasetError("model_not_available",
                                   f"Base model '{job.base_model}' is not available on this "
                                   "server.",
                                   "model")
            count = token_counter(spec.path)
            context = spec.context_length
            given = job.method.get(method, {}).get("hyperparameters", {})
            limit = given.get("max_seq_length")
            stats = validate_training_file(
                self._lines(job, attempt, job.training_file, deadline),
                method=method, count_tokens=count, context_length=context,
                max_seq_length=limit,
            )
            longest = stats.max_tokens
            if job.validation_file:
                param = "validation_file"
                longest = max(longest, validate_training_file(
                    self._lines(job, attempt, job.validation_file, deadline),
                    method=method, count_tokens=count, context_length=context,
                    param="validation_file", min_examples=1, max_seq_length=limit,
                ).max_tokens)
        except DatasetError as err:
            with self.db.session() as s:
                jobs.fail(s, job.id, err.code, err.message, err.param,
                          expect=(JobStatus.VALIDATING_FILES,), attempt=attempt)
            return
        except BlobNotFound:
            with self.db.session() as s:
                jobs.fail(s, job.id, "file_not_found", f"The {param} of this job was deleted.",
                          param, expect=(JobStatus.VALIDATING_FILES,), attempt=attempt)
            return
        hp = resolve(method, given, n_examples=stats.n_examples, longest_example=longest,
                     context_length=context, shape=ModelShape.of(spec.config))
        # The method's other fields (a reinforcement job's grader) stay as they were.
        resolved = {**job.method, method: {**job.method.get(method, {}),
                                           "hyperparameters": hp.as_dict()}}
        with self.db.session() as s:
            if jobs.transition(s, job.id, (JobStatus.VALIDATING_FILES,), attempt,
                               status=JobStatus.QUEUED, method=resolved, heartbeat_at=None,
                               n_examples=stats.n_examples, n_tokens=stats.n_tokens):
                jobs.add_event(s, job.id, f"Files validated: {stats.n_examples} examples, "
                               f"{stats.n_tokens} tokens. Moving job to queued state")
                for warning in self._integration_warnings(job):
                    jobs.add_event(s, job.id, warning, level="warn")

    @staticmethod
    def _integration_warnings(job: FineTuningJob) -> list[str]:
        warnings = []
        for integration in job.integrations or []:
            if integration.get("type") != "wandb":
                continue
            if importlib.util.find_spec("wandb") is None:
                warnings.append("The wandb integration is off: the wandb package is not "
                                "installed on this server.")
            elif not os.environ.get("WANDB_API_KEY"):
                warnings.append("The wandb integration is off: WANDB_API_KEY is not set on "
                                "this server.")
        return warnings

    # Reconcile: the DB's view against the executor's

    def reconcile(self) -> None:
        self.executor.housekeep()
        with self.db.session() as s:
            held = list(s.scalars(select(FineTuningJob).where(
                FineTuningJob.status.not_in((JobStatus.VALIDATING_FILES, JobStatus.QUEUED)),
                FineTuningJob.worker.is_not(None),
            )))
        now = time.time()
        for job in held:
            info = self.executor.state(job.id, job.attempt)
            if job.status == JobStatus.CANCELLED:
                self._stop_cancelled(job, info, now)
            elif job.status in jobs.WORKING:
                self._watch_working(job, info, now)
            elif info.state in (WorkerState.RUNNING, WorkerState.PENDING):
                if job.status == JobStatus.FAILED:
                    self.executor.stop(job.id, job.attempt)
            else:
                self._release(job)

    def _watch_working(self, job: FineTuningJob, info: WorkerInfo, now: float) -> None:
        key = (job.id, job.attempt)
        if job.status == JobStatus.PAUSING and key not in self._stop_sent:
            # The worker also sees `pausing` itself; the signal reaches it on any node.
            self._stop_sent.add(key)
            self.executor.stop(job.id, job.attempt)
        stale = now - (job.heartbeat_at or 0) > self.settings.worker_heartbeat_timeout
        if info.state is WorkerState.PENDING:
            if (now - (job.heartbeat_at or 0) > self.settings.ray_placement_timeout
                    and not self.executor.placeable(job.id, job.attempt)):
                self.executor.stop(job.id, job.attempt, force=True)
                with self.db.session() as s:
                    jobs.fail(s, job.id, "no_capacity",
                              "No node in the training cluster has the resources this job "
                              "needs (GPUs, or the configured resources and labels).",
                              expect=jobs.WORKING, attempt=job.attempt)
        elif info.state is WorkerState.EXITED and info.exit_code == EXIT_OUTAGE:
            self._wait_out_outage(job)
        elif info.state is WorkerState.EXITED:
            self._recover(job, f"the worker exited with code {info.exit_code}"
                          if info.exit_code else "the worker stopped")
        elif info.state is WorkerState.UNKNOWN and stale:
            self._recover(job, "the worker stopped reporting")

    def _stop_cancelled(self, job: FineTuningJob, info: WorkerInfo, now: float) -> None:
        key = (job.id, job.attempt)
        if info.state in (WorkerState.RUNNING, WorkerState.PENDING):
            first = self._cancel_seen.setdefault(key, now)
            self.executor.stop(job.id, job.attempt,
                               force=now - first > self.settings.cancel_grace_seconds)
            return
        if info.state is WorkerState.UNKNOWN and (
            now - (job.heartbeat_at or 0) < self.settings.worker_heartbeat_timeout
        ):
            return  # a worker elsewhere is still winding down
        with self.db.session() as s:
            jobs.discard_outputs(s, self.store, job)
        self._cancel_seen.pop(key, None)
        self._release(job)

    def _release(self, job: FineTuningJob) -> None:
        if not self.executor.forget(job.id, job.attempt):
            return  # the job keeps its worker; the next tick tries again
        self._stop_sent.discard((job.id, job.attempt))
        with self.db.session() as s:
            if jobs.transition(s, job.id, jobs.TERMINAL + (JobStatus.PAUSED,), job.attempt,
                               worker=None) and job.status == JobStatus.FAILED:
                jobs.discard_state(s, self.store, job)

    def _wait_out_outage(self, job: FineTuningJob) -> None:
        """The worker stopped itself: the blob store or the DB was unreachable. Not the job's
        fault nor a lost worker: queued again, started once the wait is over."""
        if job.status == JobStatus.PAUSING:
            self._recover(job, "an outage")  # paused at its last saved state
            return
        self.executor.forget(job.id, job.attempt)
        wait = self.settings.outage_retry_seconds
        with self.db.session() as s:
            if jobs.transition(s, job.id, (JobStatus.RUNNING,), job.attempt,
                               status=JobStatus.QUEUED, worker=None, estimated_finish=None,
                               not_before=time.time() + wait):
                jobs.add_event(s, job.id, "Training was interrupted: the storage or the "
                               f"database was unreachable; resuming from the last saved "
                               f"state in {wait:.0f} s", level="warn")

    def _recover(self, job: FineTuningJob, why: str) -> None:
        """The worker is gone without a last word: another attempt resumes from the newest
        complete state (or from the start), a bounded number of times."""
        tail = self.executor.log_tail(job.id, job.attempt)
        self.executor.forget(job.id, job.attempt)
        with self.db.session() as s:
            if job.status == JobStatus.PAUSING:
                if jobs.transition(s, job.id, (JobStatus.PAUSING,), job.attempt,
                                   status=JobStatus.PAUSED, worker=None, estimated_finish=None):
                    jobs.add_event(s, job.id, "Fine-tuning job paused at its last saved state")
                return
            if job.recoveries < self.settings.max_job_recoveries:
                where = ("resuming from its last saved state" if job.resume_state
                         else "starting again from the beginning")
                if jobs.transition(s, job.id, (JobStatus.RUNNING,), job.attempt,
                                   status=JobStatus.QUEUED, worker=None,
                                   recoveries=job.recoveries + 1, estimated_finish=None):
                    jobs.add_event(s, job.id, f"Training was interrupted ({why}); {where}",
                                   level="warn")
                    self._add_log_tail(s, job.id, tail)
                return
            if jobs.fail(s, job.id, "worker_lost",
                         f"Training stopped unexpectedly ({why}) "
                         f"{self.settings.max_job_recoveries + 1} times.",
                         expect=(JobStatus.RUNNING,), attempt=job.attempt):
                self._add_log_tail(s, job.id, tail)
                s.flush()
                jobs.transition(s, job.id, (JobStatus.FAILED,), worker=None)
                jobs.discard_state(s, self.store, job)

    @staticmethod
    def _add_log_tail(s: Session, job_id: str, tail: str) -> None:
        if tail.strip():
            jobs.add_event(s, job_id, "Last output of the worker:\n" + redact(tail.strip()),
                           level="error")

    # queued -> running: round-robin across projects, bounded

    def start_queued(self) -> None:
        for job_id in self._runnable():
            if self._stop.is_set():
                return
            with self.db.session() as s:
                # SKIP LOCKED: a job another scheduler is claiming right now is not waited
                # for; the conditional UPDATE in `take` is what guarantees one winner.
                if s.scalar(select(FineTuningJob.id).where(
                        FineTuningJob.id == job_id, FineTuningJob.status == JobStatus.QUEUED)
                        .with_for_update(skip_locked=True)) is None:
                    continue
                attempt = jobs.take(s, job_id, (JobStatus.QUEUED,), status=JobStatus.RUNNING,
                                    heartbeat_at=time.time(), worker=self.executor.name)
            if attempt is None:
                continue
            self._launch(job_id, attempt)

    def _launch(self, job_id: str, attempt: int) -> None:
        try:
            where = self.executor.start(job_id, attempt)
        except ExecutorUnavailable as exc:
            log.warning("cannot start %s now: %s", job_id, exc)
            with self.db.session() as s:
                jobs.transition(s, job_id, (JobStatus.RUNNING,), attempt,
                                status=JobStatus.QUEUED, worker=None)
            return
        except Exception:
            log.exception("could not start a worker for %s", job_id)
            with self.db.session() as s:
                jobs.fail(s, job_id, "worker_start_failed",
                          "The training worker could not be started.", attempt=attempt,
                          expect=(JobStatus.RUNNING,))
            return
        with self.db.session() as s:
            jobs.transition(s, job_id, jobs.WORKING, attempt, worker=where)

    def _runnable(self) -> list[str]:
        """Queued job ids in the order to start them: round-robin over projects (oldest job
        first within each), within the node's and each project's limits."""
        settings = self.settings
        with self.db.session() as s:
            busy = dict(s.execute(
                select(FineTuningJob.project_id, func.count())
                .where(FineTuningJob.status.in_(jobs.WORKING))
                .group_by(FineTuningJob.project_id)).all())
            room = STARTS_PER_TICK
            if self.executor.node_prefix is not None:
                here = s.scalar(select(func.count()).select_from(FineTuningJob).where(
                    FineTuningJob.status.in_(jobs.WORKING),
                    FineTuningJob.worker.startswith(self.executor.node_prefix))) or 0
                room = min(room, settings.max_concurrent_jobs - here)
            capacity = self.executor.capacity()
            # A cluster: what it can run, less what it runs for us. At 0 nothing could ever
            # place the job: it goes through, to fail `no_capacity` after the placement wait.
            if capacity:
                working = s.scalar(select(func.count()).select_from(FineTuningJob).where(
                    FineTuningJob.status.in_(jobs.WORKING))) or 0
                room = min(room, capacity - working)
            if room <= 0:
                return []
            # Each project's own oldest few, never one window over all projects that one
            # project's backlog could fill; a project at its limit is not even read.
            per_project = settings.max_running_jobs_per_project
            full = [p for p, n in busy.items() if per_project and n >= per_project]
            queued = oldest_per_project(s, room, (
                FineTuningJob.status == JobStatus.QUEUED,
                or_(FineTuningJob.not_before.is_(None),
                    FineTuningJob.not_before <= time.time()),
                FineTuningJob.project_id.not_in(full) if full else true(),
            ))
        return fair_order(queued, busy, per_project)[:room]


def oldest_per_project(session: Session, each: int, where: Iterable[ColumnElement[bool]],
                       ) -> list[tuple[str, str]]:
    """(job id, project id) of the `each` oldest jobs of every project that match `where`,
    oldest first: a window per project (ROW_NUMBER, on SQLite and PostgreSQL alike), so what
    one project has waiting never hides another's."""
    ranked = (select(FineTuningJob.id, FineTuningJob.project_id, FineTuningJob.seq,
                     func.row_number().over(partition_by=FineTuningJob.project_id,
                                            order_by=FineTuningJob.seq).label("rank"))
              .where(*where).subquery())
    return [(row.id, row.project_id) for row in session.execute(
        select(ranked.c.id, ranked.c.project_id).where(ranked.c.rank <= each)
        .order_by(ranked.c.seq))]


def fair_order(queued: list[tuple[str, str]], busy: dict[str, int], per_project: int,
               ) -> list[str]:
    """Round-robin across projects: each round takes the oldest waiting job of every project,
    fewest running first; a project at `per_project` running jobs (0: no limit) waits."""
    by_project: dict[str, list[str]] = defaultdict(list)
    for job_id, project in queued:  # oldest first
        by_project[project].append(job_id)
    running = dict(busy)
    order: list[str] = []
    allowed: Callable[[str], bool] = (
        (lambda p: running.get(p, 0) < per_project) if per_project > 0 else (lambda p: True))
    while True:
        projects = sorted((p for p, ids in by_project.items() if ids and allowed(p)),
                          key=lambda p: running.get(p, 0))
        if not projects:
            return order
        for project in projects:
            order.append(by_project[project].pop(0))
            running[project] = running.get(project, 0) + 1
