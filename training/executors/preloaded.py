"""Workers forked from a process that has already imported training's libraries.

A cold worker spends most of its start importing Unsloth, TRL, transformers and torch (13 s
on a 2-core CPU node, before it reads a byte of the job). The launcher imports them once,
then forks a worker per attempt, which starts training at once. A forked worker is what a
cold one is: its own session (a signal to the API's group does not reach it, it outlives an
API restart), its own log, `python -m training.worker JOB ATTEMPT` as its command line.

Only where no CUDA device is present: CUDA does not survive a fork, and importing Unsloth
on a GPU node initialises it. There, and until the launcher is ready, workers start cold.

`python -m training.executors.preloaded` is the launcher: requests arrive on stdin as JSON
lines (`{"job_id", "attempt", "log"}`), and its answers (`ready`, `started`, `exited`,
`unavailable`) leave on the stdout it had at its start; everything else it or the imported
libraries print goes to stderr."""

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

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
        self._started: dict[tuple[str, int], int] = {}
        self.exit_codes: dict[int, int] = {}

    def warm(self) -> None:
        """Starts the launcher (it imports in the background) unless it runs or gave up."""
        with self._lock:
            if self._proc is not None or self._given_up:
                return
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as out:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "training.executors.preloaded"], env=self._env,
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
                    self._started[(message["job_id"], message["attempt"])] = message["started"]
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

    def start(self, job_id: str, attempt: int, log_path: Path) -> int | None:
        """The forked worker's pid, or None if the launcher is not ready (start one cold)."""
        with self._lock:
            proc = self._proc
            if not self._ready or proc is None or proc.stdin is None:
                return None
            request = {"job_id": job_id, "attempt": attempt, "log": str(log_path)}
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                self._ready = False
                return None
            key = (job_id, attempt)
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


# The launcher process


def _send(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _run_worker(job_id: str, attempt: int, log_path: str) -> int:
    """In the forked child: becomes a worker exactly as a cold one is, then trains."""
    os.setsid()
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    argv = ["-m", "training.worker", job_id, str(attempt)]
    import setproctitle

    # Operators (and `ps`, `pkill -f training.worker`) see the command a cold worker has.
    setproctitle.setproctitle(" ".join([sys.executable, *argv]))
    sys.argv = argv[1:]
    from training import worker

    return worker.main([job_id, str(attempt)])


def _fork_worker(request: dict[str, Any], protocol: IO[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        protocol.close()
        code = _run_worker(request["job_id"], int(request["attempt"]), request["log"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(protocol: IO[str]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        # As Popen reports it: the exit status, or minus the signal that ended it.
        _send(protocol, exited=pid, code=os.waitstatus_to_exitcode(status))


def main() -> int:
    # The protocol keeps the stdout the API gave; whatever else is printed goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # Before any import of torch: its CUDA check through NVML leaves CUDA uninitialised.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    if torch.cuda.is_available():
        _send(protocol, unavailable="a CUDA device is present (CUDA does not survive a fork)")
        return 0
    from training.trainer import prepare_environment

    prepare_environment()
    import unsloth  # noqa: F401  - patches TRL and transformers; must come first

    import training.run  # noqa: F401  - what a worker imports next
    import training.worker  # noqa: F401

    _send(protocol, ready=True)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    pending = b""
    while True:
        if selector.select(timeout=0.2):
            chunk = os.read(0, 65536)
            if not chunk:
                return 0  # the API process is gone; its workers run on
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = _fork_worker(request, protocol)
                _send(protocol, started=pid, job_id=request["job_id"],
                      attempt=int(request["attempt"]))
        _reap(protocol)


if __name__ == "__main__":
    sys.exit(main())
