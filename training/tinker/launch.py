"""Starts Tinker trainers (`python -m training.tinker.trainer MODEL_ID ATTEMPT`) where jobs'
workers run: forked beside the API by the local executor (from the launcher that preloads
jobs' imports), or as Ray jobs on GPU nodes with `executor = "ray"`. A run whose trainer
beats anywhere needs none; otherwise the node claims the run's next attempt and starts one,
at most `tinker_max_trainers` at once from this node."""

import threading
import time

from sqlalchemy import select

from storage.db import Database
from storage.models import TinkerModel
from training.executors import Executor, LocalExecutor, WorkerState
from training.settings import TrainingSettings
from training.tinker import runs

# How long the API node's stop waits for its local trainers to end before killing them.
STOP_WAIT_SECONDS = 10.0


class TrainersBusy(RuntimeError):
    """This node runs as many trainers as it may; the request is to be retried later."""


class TinkerTrainers:
    def __init__(self, settings: TrainingSettings, db: Database, executor: Executor) -> None:
        self.settings, self.db, self.executor = settings, db, executor
        self._attempts: dict[str, int] = {}  # run -> the attempt this node started
        self._lock = threading.Lock()

    def _live(self, model_id: str) -> bool:
        """This node's trainer of the run is queued for a node, starting or running."""
        attempt = self._attempts.get(model_id)
        if attempt is None:
            return False
        if self.executor.state(model_id, attempt).state in (WorkerState.PENDING,
                                                             WorkerState.RUNNING):
            return True
        self.executor.forget(model_id, attempt)
        del self._attempts[model_id]
        return False

    def ensure(self, model_id: str) -> None:
        """A trainer for the run: the live one, or one started here. Raises TrainersBusy when
        it needs one and this node has no room, ExecutorUnavailable when the cluster cannot
        be reached."""
        with self._lock:
            with self.db.session() as s:
                run = s.scalar(select(TinkerModel).where(TinkerModel.id == model_id))
                if run is None or runs.trainer_alive(run, time.time()):
                    return  # gone, or its trainer beats (here or on another node)
                if self._live(model_id):
                    return  # not beating yet: waiting for a GPU node, or importing
                self.executor.housekeep()
                if sum(self._live(m) for m in list(self._attempts)) >= \
                        self.settings.tinker_max_trainers:
                    raise TrainersBusy(self.settings.tinker_max_trainers)
                attempt = runs.claim(s, model_id)
            if attempt is None:
                return  # another node claimed it first
            try:
                self.executor.start(model_id, attempt)
            except BaseException:
                with self.db.session() as s:
                    runs.release(s, model_id, attempt)
                raise
            self._attempts[model_id] = attempt

    def close(self) -> None:
        """The API node stops: its local trainers stop with it (their runs' weights live only
        in their memory, and a session of this node's clients ends with it too). Trainers on
        a Ray cluster live on: another API node may hear their sessions."""
        with self._lock:
            if isinstance(self.executor, LocalExecutor):
                for model_id, attempt in self._attempts.items():
                    self.executor.stop(model_id, attempt)
                deadline = time.monotonic() + STOP_WAIT_SECONDS
                while any(self._live(m) for m in list(self._attempts)):
                    if time.monotonic() > deadline:
                        for model_id, attempt in self._attempts.items():
                            self.executor.stop(model_id, attempt, force=True)
                        break
                    time.sleep(0.1)
            self._attempts.clear()
            self.executor.close()
