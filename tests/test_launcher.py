"""The preloaded launcher's fork (training/launcher.py), without training: a worker forked
from it must be able to run torch's parallel operations with as many threads as a cold one."""

import os
import signal
import subprocess
import sys
import textwrap

# The launcher's steps around a fork, then a parallel operation in the parent (as an import
# may run one) and in the child (as every training step does).
FORK_AFTER_PARALLEL_WORK = textwrap.dedent("""
    import os, sys, torch
    from training.launcher import serial_until_fork, threads_after_fork

    cold_threads = torch.get_num_threads()
    threads = serial_until_fork()
    big = torch.randn(512, 512)
    big @ big
    pid = os.fork()
    if pid == 0:
        threads_after_fork(threads)
        big @ big
        torch.randn(4_000_000).mul(2).sum()
        os._exit(0 if torch.get_num_threads() == cold_threads else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


def test_a_forked_worker_runs_parallel_operations_with_a_cold_workers_threads() -> None:
    # Without the launcher keeping to one thread, the child hangs at its first matmul.
    proc = subprocess.Popen([sys.executable, "-c", FORK_AFTER_PARALLEL_WORK],
                            env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung child with it
        proc.wait()
        raise AssertionError("the forked child hung at its first parallel operation") from None
    assert proc.returncode == 0, stderr
