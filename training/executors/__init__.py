"""Where workers run: a subprocess here (`local`), or a Ray job on a GPU node (`ray`)."""

from training.executors.base import Executor, WorkerState
from training.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "WorkerState"]
