"""`python -m training.launcher`: the preloaded launcher of the local executor
(training/executors/preloaded.py starts it and talks to it). It imports training's libraries
once, then forks a process per request, exactly as a cold `python -m training.worker` (or
`python -m training.tinker.trainer`) would run; never on a node with CUDA (CUDA does not
survive a fork).

Requests arrive on stdin as JSON lines (`{"module", "job_id", "attempt", "log"}`); its answers
(`ready`, `started`, `exited`, `unavailable`) leave on the stdout it had at its start, and
everything else it or the imported libraries print goes to stderr."""

import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
from typing import IO, Any


def _send(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def serial_until_fork() -> int:
    """Keeps the launcher from starting torch's OpenMP/MKL thread pool; returns the thread
    count each forked worker restores (`threads_after_fork`). A pool's threads do not survive
    a fork, and a child whose parent had started one waits on them for ever at its first
    parallel operation: the worker hangs at its first step, with no error and no exit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def threads_after_fork(threads: int) -> None:
    """In the forked child: its own pool, as large as a cold worker's."""
    import torch

    torch.set_num_threads(threads)


# What it may be asked to run: a job's worker or a Tinker run's trainer.
PROGRAMS = ("training.worker", "training.tinker.trainer")
# Set in a forked process's environment, so it can tell it was not started cold.
FORKED_ENV = "TUNESERVE_FORKED_FROM_LAUNCHER"


def forked_from_launcher() -> bool:
    return os.environ.get(FORKED_ENV) == "1"


def _run_worker(module: str, job_id: str, attempt: int, log_path: str, threads: int) -> int:
    """In the forked child: becomes the program exactly as a cold one is, then trains."""
    threads_after_fork(threads)
    os.environ[FORKED_ENV] = "1"
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
    argv = ["-m", module, job_id, str(attempt)]
    import setproctitle

    # Operators (and `ps`, `pkill -f training.worker`) see the command a cold worker has.
    setproctitle.setproctitle(" ".join([sys.executable, *argv]))
    sys.argv = argv[1:]
    program = importlib.import_module(module)
    return int(program.main([job_id, str(attempt)]))


def _fork_worker(request: dict[str, Any], protocol: IO[str], threads: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        protocol.close()
        module = request.get("module", "training.worker")
        if module not in PROGRAMS:
            raise ValueError(f"not a program the launcher runs: {module!r}")
        code = _run_worker(module, request["job_id"], int(request["attempt"]), request["log"],
                           threads)
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
    started = time.monotonic()
    # Before any import of torch: its CUDA check through NVML leaves CUDA uninitialised.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    if torch.cuda.is_available():
        _send(protocol, unavailable="a CUDA device is present (CUDA does not survive a fork)")
        return 0
    threads = serial_until_fork()  # before the imports below run any torch operation
    from training.trainer import prepare_environment

    prepare_environment()
    import unsloth  # noqa: F401  - patches TRL and transformers; must come first

    import training.run  # noqa: F401  - what a worker imports next
    import training.tinker.trainer  # noqa: F401
    import training.worker  # noqa: F401

    # For operators (and bench/worker_start.py): what each forked worker no longer pays.
    print(f"preloaded launcher ready: imports took {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)
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
                pid = _fork_worker(request, protocol, threads)
                _send(protocol, started=pid, module=request.get("module", "training.worker"),
                      job_id=request["job_id"], attempt=int(request["attempt"]))
        _reap(protocol)


if __name__ == "__main__":
    sys.exit(main())
