"""Workers forked from a process that has already imported training's libraries.

A cold worker spends most of its start importing Unsloth, TRL, transformers and torch (13 s
on a 2-core CPU node, before it reads a byte of the job). The launcher imports them once,
then forks a worker per attempt, which starts training at once. A forked worker is what a
cold one is: its own session (a signal to the API's group does not reach it, it outlives an
API restart), its own log, `python -m training.worker JOB ATTEMPT` as its command line.

Only where no CUDA device is present: CUDA does not survive a fork, and importing Unsloth
on a GPU node initialises it. There, and until the launcher is ready, workers start cold.

The launcher is `python -m training.launcher` (training/launcher.py); this is its API side."""

import contextlib
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger("tuneserve.executor")

# How long `start` waits for the launcher to answer with the forked worker's pid.
START_TIMEOUT_SECONDS = 10.0


class PreloadedLauncher:
    """The API side: starts the launcher, asks it for workers, hears of their exits."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self._env, self._cwd, self._log_path = env, cwd, log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Condition()
        self._ready = False
        self._alive = False
        self._given_up = False
        self._started: dict[tuple[str, str, int], int] = {}  # (module, id, attempt) -> pid
        self.exit_codes: dict[int, int] = {}

    def warm(self) -> None:
        """Starts the launcher (it imports in the background) unless it runs or gave up."""
        with self._lock:
            if self._proc is not None or self._given_up:
                return
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as out:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "training.launcher"], env=self._env,
                    cwd=self._cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out)
            self._alive = True
        threading.Thread(target=self._listen, args=(self._proc,), name="preloaded-launcher",
                         daemon=True).start()

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def alive(self) -> bool:
        """Still running, so the exits of the workers it forked are still heard."""
        with self._lock:
            return self._alive

    def _listen(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if "ready" in message:
                    self._ready = True
                elif "started" in message:
                    key = (message["module"], message["job_id"], message["attempt"])
                    self._started[key] = message["started"]
                    self.exit_codes.pop(message["started"], None)  # a pid used again
                elif "exited" in message:
                    self.exit_codes[message["exited"]] = message["code"]
                elif "unavailable" in message:
                    log.info("workers start cold: %s", message["unavailable"])
                    self._given_up = True
                self._lock.notify_all()
        proc.wait()
        with self._lock:
            # Workers it forked run on (their own sessions); only their exit codes are lost.
            self._ready = self._alive = False
            self._lock.notify_all()

    def start(self, module: str, job_id: str, attempt: int, log_path: Path) -> int | None:
        """The pid of the forked `python -m MODULE JOB_ID ATTEMPT`, or None if the launcher
        is not ready (start one cold)."""
        with self._lock:
            proc = self._proc
            if not self._ready or proc is None or proc.stdin is None:
                return None
            request = {"module": module, "job_id": job_id, "attempt": attempt,
                       "log": str(log_path)}
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                self._ready = False
                return None
            key = (module, job_id, attempt)
            if not self._lock.wait_for(lambda: key in self._started or not self._ready,
                                       timeout=START_TIMEOUT_SECONDS):
                # Stuck: kill it, so a late fork cannot run beside the cold worker.
                log.warning("the preloaded launcher did not answer; workers start cold")
                self._ready, self._given_up = False, True
                proc.kill()
                return None
            return self._started.pop(key, None)

    def close(self) -> None:
        with self._lock:
            proc, self._proc, self._ready = self._proc, None, False
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # it exits when its stdin ends
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
