"""Workers as subprocesses of the API process, on this machine."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from training.executors.base import WORKER, Program, WorkerInfo, WorkerState
from training.executors.preloaded import PreloadedLauncher
from training.settings import TrainingSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class ForkedWorker:
    """A worker the preloaded launcher forked: not a child of this process, so its exit is
    heard from the launcher (the subset of Popen the executor uses)."""

    def __init__(self, pid: int, launcher: PreloadedLauncher) -> None:
        self.pid, self._launcher = pid, launcher

    def poll(self) -> int | None:
        code = self._launcher.exit_codes.get(self.pid)
        if code is not None or self._launcher.alive:
            return code
        # The launcher is gone, and with it the exit code: only whether it still runs.
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return None


Worker = subprocess.Popen[bytes] | ForkedWorker


def worker_env(s: TrainingSettings) -> dict[str, str]:
    """A worker's environment: it reads exactly the storage the API uses, however the API
    was configured."""
    env = dict(os.environ)
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


class LocalExecutor:
    name = "local"

    def __init__(self, settings: TrainingSettings, program: Program = WORKER,
                 launcher: PreloadedLauncher | None = None) -> None:
        """Runs `program`; forks it from `launcher` when given (another executor's, shared:
        its imports are the same), else from a launcher of its own if `worker_preload`."""
        self.settings, self.program = settings, program
        self.log_dir = settings.data_dir.resolve() / "logs"
        self.node_prefix = f"local:{socket.gethostname()}:"
        self._procs: dict[tuple[str, int], Worker] = {}
        # Workers of attempts that were superseded (they stop themselves once they notice):
        # reaped here, since nobody asks about their attempts any more.
        self._superseded: list[Worker] = []
        self._owns_launcher = launcher is None and settings.worker_preload
        self.launcher = (PreloadedLauncher(worker_env(settings), REPO_ROOT,
                                           self.log_dir / "launcher.log")
                         if self._owns_launcher else launcher)

    def _log_path(self, job_id: str, attempt: int) -> Path:
        return self.log_dir / self.program.log_name(job_id, attempt)

    def start(self, job_id: str, attempt: int) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_path(job_id, attempt)
        proc: Worker | None = None
        if self.launcher is not None:
            pid = self.launcher.start(self.program.module, job_id, attempt, log_path)
            proc = ForkedWorker(pid, self.launcher) if pid is not None else None
            # The first job on this node starts cold while the launcher imports, for the next.
            self.launcher.warm()
        if proc is None:
            with open(log_path, "ab") as log:
                # Its own session: a signal to the API's process group does not hit training,
                # and an API restart leaves a running worker to finish.
                proc = subprocess.Popen(
                    [sys.executable, "-m", self.program.module, job_id, str(attempt)],
                    env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT,
                )
        for key in [k for k in self._procs if k[0] == job_id]:
            self._superseded.append(self._procs.pop(key))
        self._procs[(job_id, attempt)] = proc
        return f"{self.node_prefix}{proc.pid}"

    def close(self) -> None:
        """Stops its own launcher; the workers it started train on."""
        if self.launcher is not None and self._owns_launcher:
            self.launcher.close()

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
