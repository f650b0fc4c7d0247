"""Moves jobs along: validates files, starts queued jobs on the executor (FIFO, bounded),
watches running workers and recovers jobs whose worker was lost. Runs in the API process;
all of its state is in the DB, so a restarted API picks up where the last one stopped."""

import importlib.util
import logging
import os
import threading
import time
from collections import Counter

from sqlalchemy import func, select

from storage.base_models import base_models
from storage.blob import BlobNotFound, BlobStore
from storage.db import Database
from storage.keys import file_key, job_prefix
from storage.models import FineTuningJob
from training import jobs
from training.data import read_lines
from training.executors import Executor, WorkerState
from training.hyperparameters import resolve
from training.settings import TrainingSettings
from training.tokens import token_counter
from training.validation import DatasetError, validate_training_file

log = logging.getLogger("tuneserve.scheduler")

# A job whose worker keeps dying is failed rather than restarted forever.
MAX_RECOVERIES = 3


class Scheduler:
    def __init__(
        self, settings: TrainingSettings, db: Database, store: BlobStore, executor: Executor
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.executor = executor
        self._recoveries: Counter[str] = Counter()
        self._cancel_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
            self._stop.wait(self.settings.scheduler_interval)

    def tick(self) -> None:
        self.validate_pending()
        self.watch_workers()
        self.start_queued()

    # validating_files -> queued | failed

    def validate_pending(self) -> None:
        with self.db.session() as s:
            pending = list(s.scalars(
                select(FineTuningJob).where(FineTuningJob.status == "validating_files")
                .order_by(FineTuningJob.seq).limit(4)
            ))
        for job in pending:
            self._validate(job)

    def _validate(self, job: FineTuningJob) -> None:
        spec = base_models(self.settings).get(job.model)
        method = job.method["type"]
        try:
            if spec is None or not spec.prepared:
                raise DatasetError("model_not_available",
                                   f"Base model '{job.model}' is not available on this server.",
                                   "model")
            count = token_counter(spec.path)
            context = spec.context_length
            stats = validate_training_file(
                read_lines(self.store, file_key(job.project_id, job.training_file)),
                method=method, count_tokens=count, context_length=context,
            )
            if job.validation_file:
                validate_training_file(
                    read_lines(self.store, file_key(job.project_id, job.validation_file)),
                    method=method, count_tokens=count, context_length=context,
                    param="validation_file", min_examples=1,
                )
        except DatasetError as err:
            with self.db.session() as s:
                jobs.fail(s, job.id, err.code, err.message, err.param,
                          expect=("validating_files",))
            return
        except BlobNotFound:
            with self.db.session() as s:
                jobs.fail(s, job.id, "file_not_found", "A file of this job was deleted.",
                          "training_file", expect=("validating_files",))
            return
        given = job.method.get(method, {}).get("hyperparameters", {})
        hp = resolve(method, given, stats.n_examples, context)
        resolved = {**job.method, method: {"hyperparameters": hp.as_dict()}}
        with self.db.session() as s:
            if jobs.transition(s, job.id, ("validating_files",), status="queued",
                               method=resolved, n_examples=stats.n_examples,
                               n_tokens=stats.n_tokens):
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

    # running: watch, stop cancelled, recover lost

    def watch_workers(self) -> None:
        with self.db.session() as s:
            watched = list(s.scalars(select(FineTuningJob).where(
                FineTuningJob.status.in_(("running", "cancelled", "paused", "succeeded",
                                          "failed")),
                FineTuningJob.worker.is_not(None),
            )))
        now = time.time()
        for job in watched:
            state, code = self.executor.state(job.id)
            if job.status == "cancelled":
                self._stop_cancelled(job, state, now)
            elif job.status == "running":
                if state is WorkerState.EXITED:
                    self._recover(job, f"the worker exited with code {code}")
                elif (state is WorkerState.UNKNOWN and
                      now - (job.heartbeat_at or 0) > self.settings.worker_heartbeat_timeout):
                    self._recover(job, "the worker stopped reporting")
            elif state is not WorkerState.RUNNING:
                self._release(job.id)

    def _stop_cancelled(self, job: FineTuningJob, state: WorkerState, now: float) -> None:
        if state is WorkerState.RUNNING:
            first = self._cancel_seen.setdefault(job.id, now)
            self.executor.stop(job.id, force=now - first > self.settings.cancel_grace_seconds)
            return
        if state is WorkerState.UNKNOWN and (
            now - (job.heartbeat_at or 0) < self.settings.worker_heartbeat_timeout
        ):
            return  # a worker elsewhere is still winding down
        with self.db.session() as s:
            jobs.discard_outputs(s, self.store, job)
        self._cancel_seen.pop(job.id, None)
        self._release(job.id)

    def _release(self, job_id: str) -> None:
        self.executor.forget(job_id)
        with self.db.session() as s:
            jobs.transition(s, job_id, jobs.TERMINAL + ("paused",), worker=None)

    def _recover(self, job: FineTuningJob, why: str) -> None:
        self.executor.forget(job.id)
        self._recoveries[job.id] += 1
        has_state = bool(self.store.list_keys(job_prefix(job.project_id, job.id) + "state/"))
        with self.db.session() as s:
            if has_state and self._recoveries[job.id] <= MAX_RECOVERIES:
                if jobs.transition(s, job.id, ("running",), status="queued", worker=None,
                                   control=None):
                    jobs.add_event(s, job.id, f"Training was interrupted ({why}); resuming "
                                   "from the last checkpoint", level="warn")
            else:
                reason = ("no checkpoint to resume from" if not has_state
                          else f"it was interrupted {MAX_RECOVERIES} times")
                jobs.fail(s, job.id, "worker_lost",
                          f"Training stopped unexpectedly ({why}) and {reason}.",
                          expect=("running",))

    # queued -> running

    def start_queued(self) -> None:
        with self.db.session() as s:
            running = s.scalar(select(func.count()).select_from(FineTuningJob)
                               .where(FineTuningJob.status == "running")) or 0
            room = self.settings.max_concurrent_jobs - running
            if room <= 0:
                return
            queued = list(s.scalars(select(FineTuningJob.id)
                                    .where(FineTuningJob.status == "queued")
                                    .order_by(FineTuningJob.seq).limit(room)))
        for job_id in queued:
            with self.db.session() as s:
                claimed = jobs.transition(s, job_id, ("queued",), status="running",
                                          heartbeat_at=time.time(), worker=self.executor.name,
                                          control=None)
            if not claimed:
                continue
            try:
                where = self.executor.start(job_id)
            except Exception as exc:
                log.exception("could not start a worker for %s", job_id)
                with self.db.session() as s:
                    jobs.fail(s, job_id, "worker_start_failed",
                              f"The training worker could not be started: {exc}")
                continue
            with self.db.session() as s:
                jobs.transition(s, job_id, ("running",), worker=where)
