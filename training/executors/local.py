"""Workers as subprocesses of the API process, on this machine."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from training.executors.base import WorkerInfo, WorkerState
from training.settings import TrainingSettings


class LocalExecutor:
    name = "local"

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        self.log_dir = settings.data_dir.resolve() / "logs"
        self.node_prefix = f"local:{socket.gethostname()}:"
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        # Workers of attempts that were superseded (they stop themselves once they notice):
        # reaped here, since nobody asks about their attempts any more.
        self._superseded: list[subprocess.Popen[bytes]] = []

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        # The worker reads exactly the storage the API uses, however the API was configured.
        env.update({
            "TUNESERVE_DATA_DIR": str(s.data_dir.resolve()),
            "TUNESERVE_BLOB_URL": s.blob_url,
            "TUNESERVE_DATABASE_URL": s.resolved_database_url,
            "TUNESERVE_BASE_MODELS": s.base_models,
            "TUNESERVE_CHECKPOINT_EVERY_SECONDS": str(s.checkpoint_every_seconds),
            "TUNESERVE_API_URL": s.api_url,
        })
        if s.models_dir:
            env["TUNESERVE_MODELS_DIR"] = str(s.models_dir.resolve())
        if s.s3_endpoint:
            env["TUNESERVE_S3_ENDPOINT"] = s.s3_endpoint
        return env

    def _log_path(self, job_id: str, attempt: int) -> Path:
        return self.log_dir / f"{job_id}-a{attempt}.log"

    def start(self, job_id: str, attempt: int) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_path(job_id, attempt), "ab") as log:
            # Its own session: a signal to the API's process group does not hit training,
            # and an API restart leaves a running worker to finish.
            proc = subprocess.Popen(
                [sys.executable, "-m", "training.worker", job_id, str(attempt)],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=Path(__file__).resolve().parents[2],
            )
        for key in [k for k in self._procs if k[0] == job_id]:
            self._superseded.append(self._procs.pop(key))
        self._procs[(job_id, attempt)] = proc
        return f"{self.node_prefix}{proc.pid}"

    def housekeep(self) -> None:
        self._superseded = [p for p in self._superseded if p.poll() is None]

    def state(self, job_id: str, attempt: int) -> WorkerInfo:
        proc = self._procs.get((job_id, attempt))
        if proc is None:
            return WorkerInfo(WorkerState.UNKNOWN)
        code = proc.poll()
        return (WorkerInfo(WorkerState.RUNNING) if code is None
                else WorkerInfo(WorkerState.EXITED, code))

    def capacity(self) -> int | None:
        return None

    def placeable(self, job_id: str, attempt: int) -> bool:
        return True

    def stop(self, job_id: str, attempt: int, force: bool = False) -> None:
        proc = self._procs.get((job_id, attempt))
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if force else signal.SIGTERM)

    def forget(self, job_id: str, attempt: int) -> bool:
        self._procs.pop((job_id, attempt), None)
        return True

    def log_tail(self, job_id: str, attempt: int, max_chars: int = 2000) -> str:
        try:
            with open(self._log_path(job_id, attempt), "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_chars))
                return f.read().decode(errors="replace")
        except OSError:
            return ""
