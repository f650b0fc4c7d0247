"""Starts Tinker trainers (`python -m training.tinker.trainer MODEL_ID ATTEMPT`) on this API
node as subprocesses, at most `tinker_max_trainers` at once. A run whose trainer beats
anywhere needs none; otherwise the node claims the run's next attempt and starts one."""

import subprocess
import sys
import threading
import time

from sqlalchemy import select

from storage.db import Database
from storage.models import TinkerModel
from training.executors.local import REPO_ROOT, worker_env
from training.settings import TrainingSettings
from training.tinker import runs


class TrainersBusy(RuntimeError):
    """This node runs as many trainers as it may; the request is to be retried later."""


class TinkerTrainers:
    def __init__(self, settings: TrainingSettings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.log_dir = settings.data_dir.resolve() / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def ensure(self, model_id: str) -> None:
        """A trainer for the run: the live one, or one started here. Raises TrainersBusy when
        it needs one and this node has no room."""
        with self._lock:
            self._procs = {k: p for k, p in self._procs.items() if p.poll() is None}
            if model_id in self._procs:
                return
            with self.db.session() as s:
                run = s.scalar(select(TinkerModel).where(TinkerModel.id == model_id))
                if run is None or runs.trainer_alive(run, time.time()):
                    return  # gone, or its trainer runs on another node
                if len(self._procs) >= self.settings.tinker_max_trainers:
                    raise TrainersBusy(self.settings.tinker_max_trainers)
                attempt = runs.claim(s, model_id)
            if attempt is not None:  # None: another node claimed it first
                self._procs[model_id] = self._start(model_id, attempt)

    def _start(self, model_id: str, attempt: int) -> "subprocess.Popen[bytes]":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"tinker-{_file_safe(model_id)}-a{attempt}.log"
        with open(log_path, "ab") as log:
            # Its own session: a signal to the API's process group does not reach it.
            return subprocess.Popen(
                [sys.executable, "-m", "training.tinker.trainer", model_id, str(attempt)],
                env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)

    def close(self) -> None:
        """The API node stops: its trainers stop with it (their runs' weights live only in
        their memory, and a session of this node's clients ends with it too)."""
        with self._lock:
            for proc in self._procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self._procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self._procs.clear()


def _file_safe(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model_id)

