"""Job state in the DB, shared by the API, the scheduler and workers on any node.

Every transition is a conditional UPDATE (`WHERE status IN expected`), so a worker, the
scheduler and an API request racing on one job cannot undo each other's decisions."""

import time
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.blob import BlobStore
from storage.ids import new_id, random_token
from storage.keys import job_prefix
from storage.models import FineTunedModel, FineTuningJob, JobCheckpoint, JobEvent

ACTIVE = ("validating_files", "queued", "running", "paused")
TERMINAL = ("succeeded", "failed", "cancelled")


def fine_tuned_model_name(base: str, project: str, suffix: str | None) -> str:
    # OpenAI's shape; an absent suffix leaves its slot empty: ft:base:org::id
    return f"ft:{base}:{project}:{suffix or ''}:{random_token(8)}"


def model_key(model_name: str) -> str:
    """The adapter's directory name for a model or checkpoint name."""
    short = model_name.split(":")[4]
    step = model_name.rsplit(":ckpt-step-", 1)
    return f"{short}-ckpt-step-{step[1]}" if len(step) == 2 else short


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(id=new_id("ftevent-"), job_id=job_id, created_at=int(time.time()),
                         level=level, message=message, type=type, data=data))


def transition(session: Session, job_id: str, expect: tuple[str, ...], **values: Any) -> bool:
    """Sets `values` on the job if its status is one of `expect`; False if it was not."""
    result = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.status.in_(expect))
        .values(**values)
    )
    return result.rowcount == 1


def fail(session: Session, job_id: str, code: str, message: str, param: str | None = None,
         expect: tuple[str, ...] = ACTIVE) -> bool:
    done = transition(
        session, job_id, expect, status="failed", finished_at=int(time.time()),
        error={"code": code, "message": message, "param": param}, control=None,
        estimated_finish=None,
    )
    if done:
        add_event(session, job_id, f"Fine-tuning job failed: {message}", level="error")
    return done


def get_job(session: Session, job_id: str) -> FineTuningJob | None:
    return session.scalar(select(FineTuningJob).where(FineTuningJob.id == job_id))


def discard_outputs(session: Session, store: BlobStore, job: FineTuningJob) -> None:
    """Removes everything a job produced: training state, checkpoints and their adapters.
    Used when a job is cancelled, which keeps no partial model."""
    models = list(session.scalars(select(FineTunedModel).where(FineTunedModel.job_id == job.id)))
    session.execute(delete(FineTunedModel).where(FineTunedModel.job_id == job.id))
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job.id))
    session.flush()
    for model in models:
        store.delete_prefix(model.adapter_prefix)
    store.delete_prefix(job_prefix(job.project_id, job.id))
