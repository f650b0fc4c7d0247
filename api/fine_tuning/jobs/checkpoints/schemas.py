"""A job's checkpoints, as the openai client's `fine_tuning.jobs.checkpoints` reads them."""

from typing import Literal

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
                   metrics={k: v for k, v in c.metrics.items() if v is not None})


class FineTuningJobCheckpointList(CursorPage[FineTuningJobCheckpointObject]):
    pass

