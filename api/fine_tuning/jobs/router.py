"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events (a job's
checkpoints are `checkpoints/`)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import DB, AppServices, AppSettings, CurrentProject, DBFactory, Storage
from api.errors import APIError, error_responses
from api.fine_tuning.jobs import service
from api.fine_tuning.jobs.event_stream import event_stream, held_stream, start_seq
from api.fine_tuning.jobs.schemas import (
    CreateFineTuningJobRequest,
    FineTuningJobEventList,
    FineTuningJobEventObject,
    FineTuningJobList,
    FineTuningJobObject,
)
from api.pagination import page
from storage.base_models import base_models
from storage.models import FineTuningJob, JobEvent

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"],
                   responses=error_responses(404, 409))

@router.post("", response_model=FineTuningJobObject)
def create_job(
    body: CreateFineTuningJobRequest, project: CurrentProject, session: DB,
    settings: AppSettings, store: Storage,
) -> FineTuningJobObject:
    served = None if settings.train_unserved_bases else settings.served_bases()
    job = service.create_job(session, store, project, body, base_models(settings),
                             settings.max_lora_rank, served, settings.engine_evaluated_bases(),
                             settings.served_bases(), settings.max_queued_jobs_per_project)
    session.commit()
    return FineTuningJobObject.of(job)


@router.get("", response_model=FineTuningJobList)
def list_jobs(
    request: Request,
    project: CurrentProject,
    session: DB,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobList:
    # `metadata[key]=value` filters, as the openai client sends them.
    filters = [(name[len("metadata[") : -1], value)
               for name, value in request.query_params.items()
               if name.startswith("metadata[") and name.endswith("]")]
    query = service.project_jobs(project.id, filters)
    rows, has_more = page(session, query, FineTuningJob, after=after, limit=limit)
    return FineTuningJobList(data=[FineTuningJobObject.of(j) for j in rows], has_more=has_more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJobObject)
def retrieve_job(fine_tuning_job_id: str, project: CurrentProject,
                 session: DB) -> FineTuningJobObject:
    return FineTuningJobObject.of(service.get_job(session, project.id, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJobObject)
def cancel_job(fine_tuning_job_id: str, project: CurrentProject, session: DB,
               store: Storage) -> FineTuningJobObject:
    job = service.get_job(session, project.id, fine_tuning_job_id)
    service.cancel_job(session, store, job)
    session.commit()
    return _fresh(session, project.id, fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/pause", response_model=FineTuningJobObject)
def pause_job(fine_tuning_job_id: str, project: CurrentProject,
              session: DB) -> FineTuningJobObject:
    service.pause_job(session, service.get_job(session, project.id, fine_tuning_job_id))
    return _fresh(session, project.id, fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/resume", response_model=FineTuningJobObject)
def resume_job(fine_tuning_job_id: str, project: CurrentProject,
               session: DB) -> FineTuningJobObject:
    service.resume_job(session, service.get_job(session, project.id, fine_tuning_job_id))
    session.commit()
    return _fresh(session, project.id, fine_tuning_job_id)


_EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"description": "With `stream=true`: the job's events as server-sent events, oldest "
                         "first, then `event: done` with the job object once it is terminal.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


@router.get("/{fine_tuning_job_id}/events", response_model=FineTuningJobEventList,
            responses=_EVENT_STREAM)
def list_events(
    fine_tuning_job_id: str, project: CurrentProject, session: DB, db: DBFactory,
    settings: AppSettings, services: AppServices,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: Annotated[bool, Query(description="Extension: follow the job's events live "
                                              "as server-sent events.")] = False,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> FineTuningJobEventList | StreamingResponse:
    service.get_job(session, project.id, fine_tuning_job_id)
    if stream:
        slots = services.event_streams
        seq = start_seq(db, fine_tuning_job_id, after or last_event_id)
        if not slots.take(project.id):
            raise APIError(429, f"This project has {slots.limit} event streams open on this "
                           "server already; close one first.", param="stream",
                           code="rate_limit_exceeded")
        events = event_stream(db, fine_tuning_job_id, seq,
                              settings.event_stream_paused_idle_seconds)
        return StreamingResponse(held_stream(slots, project.id, events),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    rows, has_more = page(session, service.job_events(fine_tuning_job_id), JobEvent,
                          after=after, limit=limit)
    return FineTuningJobEventList(data=[FineTuningJobEventObject.of(e) for e in rows],
                                  has_more=has_more)


def _fresh(session: DB, project_id: str, job_id: str) -> FineTuningJobObject:
    # A new transaction: SQLite would otherwise keep showing the snapshot it started with.
    session.commit()
    session.expire_all()
    return FineTuningJobObject.of(service.get_job(session, project_id, job_id))
