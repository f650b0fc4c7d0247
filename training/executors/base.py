"""The executor interface the scheduler drives."""

from enum import Enum
from typing import Protocol


class WorkerState(Enum):
    RUNNING = "running"
    EXITED = "exited"
    # Not started by this executor instance (e.g. before an API restart): judge by heartbeat.
    UNKNOWN = "unknown"


class Executor(Protocol):
    name: str

    def start(self, job_id: str) -> str:
        """Launches `python -m training.worker JOB_ID` somewhere; returns a description of
        where (stored on the job for operators)."""
        ...

    def state(self, job_id: str) -> tuple[WorkerState, int | None]:
        """The worker's state and, once exited, its exit code."""
        ...

    def stop(self, job_id: str, force: bool = False) -> None:
        """Asks the worker to stop (SIGTERM), or kills it (`force`)."""
        ...

    def forget(self, job_id: str) -> None:
        """Drops an exited worker's bookkeeping."""
        ...
