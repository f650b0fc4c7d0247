"""Workers as subprocesses of the API process, on this machine."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from training.executors.base import WorkerState
from training.settings import TrainingSettings


class LocalExecutor:
    name = "local"

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        self.log_dir = settings.data_dir.resolve() / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        # The worker reads exactly the storage the API uses, however the API was configured.
        env.update({
            "TUNESERVE_DATA_DIR": str(s.data_dir.resolve()),
            "TUNESERVE_BLOB_URL": s.blob_url,
            "TUNESERVE_DATABASE_URL": s.resolved_database_url,
            "TUNESERVE_BASE_MODELS": s.base_models,
        })
        if s.models_dir:
            env["TUNESERVE_MODELS_DIR"] = str(s.models_dir.resolve())
        if s.s3_endpoint:
            env["TUNESERVE_S3_ENDPOINT"] = s.s3_endpoint
        return env

    def start(self, job_id: str) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{job_id}.log", "ab") as log:
            # Its own session: a signal to the API's process group does not hit training,
            # and an API restart leaves a running worker to finish.
            proc = subprocess.Popen(
                [sys.executable, "-m", "training.worker", job_id],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=Path(__file__).resolve().parents[2],
            )
        self._procs[job_id] = proc
        return f"local:{socket.gethostname()}:{proc.pid}"

    def state(self, job_id: str) -> tuple[WorkerState, int | None]:
        proc = self._procs.get(job_id)
        if proc is None:
            return WorkerState.UNKNOWN, None
        code = proc.poll()
        return (WorkerState.RUNNING, None) if code is None else (WorkerState.EXITED, code)

    def stop(self, job_id: str, force: bool = False) -> None:
        proc = self._procs.get(job_id)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if force else signal.SIGTERM)

    def forget(self, job_id: str) -> None:
        self._procs.pop(job_id, None)

    def running(self) -> list[str]:
        return [j for j, p in self._procs.items() if p.poll() is None]
