"""The executor interface the scheduler drives. One worker per attempt of a job: an
executor names workers by (job id, attempt), so a new attempt never reuses an old one."""

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

# sysexits' EX_TEMPFAIL: the worker stopped for an outage of the DB or the blob store.
EXIT_OUTAGE = 75


@dataclass(frozen=True)
class Program:
    """What an executor runs, one process per attempt: `python -m MODULE ID ATTEMPT`."""

    module: str
    # What its id names, in a Ray submission's metadata (`tuneserve_{kind}`).
    kind: str
    # Prefixes its logs' names and its Ray submission ids, so two programs' ids never meet.
    prefix: str = ""

    def _safe(self, run_id: str) -> str:
        return self.prefix + "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)

    def submission_id(self, run_id: str, attempt: int) -> str:
        """The attempt's Ray submission id (Ray refuses a reused one)."""
        return f"{self._safe(run_id)}-attempt-{attempt}"

    def log_name(self, run_id: str, attempt: int) -> str:
        return f"{self._safe(run_id)}-a{attempt}.log"


# A fine-tuning job's worker (training/worker.py).
WORKER = Program("training.worker", kind="job")
# A Tinker training run's trainer (training/tinker/trainer.py): its id is the run's model id.
TINKER_TRAINER = Program("training.tinker.trainer", kind="tinker_run", prefix="tinker-")


class WorkerState(Enum):
    # Accepted, waiting for a node with the resources it asks for.
    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    # Not started by this executor instance (e.g. before an API restart): judge by heartbeat.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class WorkerInfo:
    state: WorkerState
    # Once exited: the process's exit code, when known.
    exit_code: int | None = None


class ExecutorUnavailable(RuntimeError):
    """The executor cannot take work right now (e.g. the Ray cluster is unreachable): the
    job waits in `queued` and is tried again."""


class Executor(Protocol):
    name: str

    # Read-only here, so an executor whose prefix is always a str (or always None) fits.
    @property
    def node_prefix(self) -> str | None:
        """Running workers' `worker` descriptions on this node start with this; the scheduler
        counts them against `max_concurrent_jobs`. None: the cluster decides how many run."""
        ...

    def start(self, job_id: str, attempt: int) -> str:
        """Launches `python -m training.worker JOB_ID ATTEMPT` somewhere; returns a
        description of where (stored on the job for operators)."""
        ...

    def state(self, job_id: str, attempt: int) -> WorkerInfo:
        ...

    def placeable(self, job_id: str, attempt: int) -> bool:
        """False when no node could ever run this worker (nothing has its resources)."""
        ...

    def capacity(self) -> int | None:
        """Workers the whole cluster can run at once, or None when it does not bound them
        (the local executor is bounded per node by `max_concurrent_jobs` instead)."""
        ...

    def stop(self, job_id: str, attempt: int, force: bool = False) -> None:
        """Asks the worker to stop (SIGTERM: it saves its state first), or kills it."""
        ...

    def forget(self, job_id: str, attempt: int) -> bool:
        """Drops an ended worker's bookkeeping; False if that failed and should be retried."""
        ...

    def housekeep(self) -> None:
        """Called on every scheduler tick: deferred clean-up (reaping, record deletion)."""
        ...

    def log_tail(self, job_id: str, attempt: int, max_chars: int = 2000) -> str:
        """The end of the worker's output, for a failure's event."""
        ...

    def close(self) -> None:
        """The API node stops: releases what the executor holds; running workers go on."""
        ...
