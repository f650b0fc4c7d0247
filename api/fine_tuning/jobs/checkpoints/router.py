"""`/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints`: the checkpoints a job saved, newest
first."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DB, CurrentProject
from api.errors import error_responses
from api.fine_tuning.jobs import service as jobs
from api.fine_tuning.jobs.checkpoints import service
from api.fine_tuning.jobs.checkpoints.schemas import (
    FineTuningJobCheckpointList,
    FineTuningJobCheckpointObject,
)
from api.pagination import page
from storage.models import JobCheckpoint

router = APIRouter(prefix="/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
                   tags=["fine-tuning"], responses=error_responses(404, 409))


@router.get("", response_model=FineTuningJobCheckpointList)
def list_checkpoints(
    fine_tuning_job_id: str, project: CurrentProject, session: DB,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> FineTuningJobCheckpointList:
    jobs.get_job(session, project.id, fine_tuning_job_id)
    rows, has_more = page(session, service.job_checkpoints(fine_tuning_job_id), JobCheckpoint,
                          after=after, limit=limit, scope=fine_tuning_job_id)
    return FineTuningJobCheckpointList(
        data=[FineTuningJobCheckpointObject.of(c) for c in rows],
        first_id=rows[0].id if rows else None, last_id=rows[-1].id if rows else None,
        has_more=has_more,
    )
