"""A job's checkpoints, as the openai client's `fine_tuning.jobs.checkpoints` reads them."""

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from api.lists import CursorPage
from storage.models import JobCheckpoint


class FineTuningJobCheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]

    @classmethod
    def of(cls, c: JobCheckpoint) -> "FineTuningJobCheckpointObject":
        return cls(id=c.id, created_at=c.created_at,
                   fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
                   fine_tuning_job_id=c.job_id, step_number=c.step_number,
                   metrics=dict(_numbers(c.metrics)))


def _numbers(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """A checkpoint's metrics as the names and numbers the client expects: a reinforcement
    job's per-grader rewards (`valid_rewards: {"says_yes": 0.5}`) become
    `valid_rewards_says_yes`; empty values are left out."""
    for name, value in metrics.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{name}_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield prefix + name, value


class FineTuningJobCheckpointList(CursorPage[FineTuningJobCheckpointObject]):
    pass

