"""Where workers run: a subprocess here (`local`), or a Ray job on a GPU node (`ray`)."""

from training.executors.base import Executor, ExecutorUnavailable, WorkerInfo, WorkerState
from training.executors.local import LocalExecutor
from training.settings import TrainingSettings

__all__ = ["Executor", "ExecutorUnavailable", "LocalExecutor", "WorkerInfo", "WorkerState",
           "open_executor"]


def open_executor(settings: TrainingSettings) -> Executor:
    if settings.executor == "ray":
        # Imported only here: `make run` and local workers need no Ray.
        from training.executors.ray import RayExecutor

        return RayExecutor(settings)
    return LocalExecutor(settings)
