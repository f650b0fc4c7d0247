"""Where workers run: a subprocess here (`local`), or a Ray job on a GPU node (`ray`)."""

from training.executors.base import (
    TINKER_TRAINER,
    WORKER,
    Executor,
    ExecutorUnavailable,
    Program,
    WorkerInfo,
    WorkerState,
)
from training.executors.local import LocalExecutor
from training.executors.preloaded import PreloadedLauncher
from training.settings import TrainingSettings

__all__ = ["TINKER_TRAINER", "WORKER", "Executor", "ExecutorUnavailable", "LocalExecutor",
           "Program", "WorkerInfo", "WorkerState", "open_executor"]


def open_executor(settings: TrainingSettings, program: Program = WORKER,
                  launcher: PreloadedLauncher | None = None) -> Executor:
    """Where `program` runs. A local executor forks from `launcher` when given (so the jobs'
    and the trainers' executors share one launcher's imports)."""
    if settings.executor == "ray":
        # Imported only here: `make run` and local workers need no Ray.
        from training.executors.ray import RayExecutor

        return RayExecutor(settings, program)
    return LocalExecutor(settings, program, launcher)
