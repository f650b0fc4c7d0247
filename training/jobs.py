"""Job state in the DB, shared by the API, the scheduler and workers on any node.

One `JobStatus` enum (defined in `storage/states.py`, which types the status column with it)
and one table of allowed transitions. Every change is a conditional UPDATE (`WHERE status IN
expected`), checked against the table, so a worker, a scheduler and an API request racing on
one job cannot undo each other's decisions. Whoever holds a job (a
validation or a worker) holds one `attempt` number; its writes also check that number
(fencing), so a holder that lost the job changes nothing."""

import time
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage import api_keys, states, webhooks
from storage.blob import BlobStore
from storage.db import rows_affected
from storage.ids import new_id, random_token
from storage.keys import job_prefix
from storage.models import FineTunedModel, FineTuningJob, JobCheckpoint, JobEvent
from storage.states import IllegalTransition as IllegalTransition  # re-exported
from storage.states import JobStatus as JobStatus  # re-exported
from storage.tombstones import bury

S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.VALIDATING_FILES: frozenset({S.QUEUED, S.PAUSED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.CANCELLED}),
    # -> queued: the worker was lost and the job goes back to wait for another.
    S.RUNNING: frozenset({S.PAUSING, S.QUEUED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # -> succeeded: training ended before the worker saw the request.
    S.PAUSING: frozenset({S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # -> validating_files when it was paused before its files were validated.
    S.PAUSED: frozenset({S.VALIDATING_FILES, S.QUEUED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
del S

TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE = tuple(s for s in JobStatus if s not in TERMINAL)
# A worker holds the job.
WORKING = (JobStatus.RUNNING, JobStatus.PAUSING)


def check_transition(expect: tuple[str, ...], target: str) -> None:
    states.check_transition(TRANSITIONS, [JobStatus(s) for s in expect], JobStatus(target))


def fine_tuned_model_name(base: str, project: str, suffix: str | None) -> str:
    # OpenAI's shape; an absent suffix leaves its slot empty: ft:base:org::id
    return f"ft:{base}:{project}:{suffix or ''}:{random_token(8)}"


def model_key(job_id: str, attempt: int, step: int | None = None) -> str:
    """The adapter's folder name for a job's final model (or its checkpoint at `step`), made
    by one attempt: two attempts of one job never write to the same place. Made of server
    ids only, never parsed from the model's name: a base or project name may hold `:`
    (`qwen2.5:7b`), and two models must never share a folder.

    Adapters stored before this layout (`{short id}[-ckpt-step-N]-a{attempt}`) are found by
    the `adapter_prefix` their model rows keep; nothing rebuilds a key for a stored model."""
    name = f"{job_id}-ckpt-step-{step}" if step is not None else job_id
    return f"{name}-a{attempt}"


def adapter_keys_start(job_id: str) -> str:
    """How every adapter folder name of the job begins (see `model_key`)."""
    return f"{job_id}-"


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


def transition(session: Session, job_id: str, expect: tuple[str, ...],
               attempt: int | None = None, **values: Any) -> bool:
    """Sets `values` on the job if its status is one of `expect` (and, for a holder, its
    `attempt` is still current); False if not. A `status` in `values` must be allowed from
    every state in `expect`."""
    if "status" in values:
        check_transition(expect, values["status"])
    query = update(FineTuningJob).where(FineTuningJob.id == job_id,
                                        FineTuningJob.status.in_(expect))
    if attempt is not None:
        query = query.where(FineTuningJob.attempt == attempt)
    query = query.values(**values)
    if values.get("status") not in TERMINAL:
        return rows_affected(session, query) == 1
    # The outcome's webhooks are queued in the transaction that commits the outcome; the
    # keys its workers minted end with it (one whose worker was lost is revoked here).
    ended = session.execute(query.returning(FineTuningJob.project_id)).first()
    if ended is not None:
        webhooks.enqueue_job_outcome(session, ended.project_id, job_id, values["status"],
                                     values.get("finished_at"))
        api_keys.revoke_job_keys(session, job_id)
    return ended is not None


def holds(session: Session, job_id: str, attempt: int) -> bool:
    """True if `attempt` still holds the job; on PostgreSQL the row stays locked until the
    session commits, so what the holder writes in the same session cannot race a takeover."""
    return transition(session, job_id, WORKING, attempt, heartbeat_at=time.time())


def take(session: Session, job_id: str, expect: tuple[str, ...], *,
         stale_before: float | None = None, **values: Any) -> int | None:
    """Takes the job for a new holder: bumps `attempt` and returns it, or None when the job
    is not in `expect` (or, with `stale_before`, its holder beat after that time)."""
    if "status" in values:
        check_transition(expect, values["status"])
    query = update(FineTuningJob).where(FineTuningJob.id == job_id,
                                        FineTuningJob.status.in_(expect))
    if stale_before is not None:
        query = query.where((FineTuningJob.heartbeat_at.is_(None))
                            | (FineTuningJob.heartbeat_at < stale_before))
    row = session.execute(
        query.values(attempt=FineTuningJob.attempt + 1, **values)
        .returning(FineTuningJob.attempt)
    ).first()
    return None if row is None else int(row[0])


def fail(session: Session, job_id: str, code: str, message: str, param: str | None = None,
         expect: tuple[str, ...] = WORKING, attempt: int | None = None) -> bool:
    done = transition(
        session, job_id, expect, attempt, status=JobStatus.FAILED,
        finished_at=int(time.time()), error={"code": code, "message": message, "param": param},
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
    bury(session, session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)))
    session.execute(delete(FineTunedModel).where(FineTunedModel.job_id == job.id))
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job.id))
    session.flush()
    for model in models:
        store.delete_prefix(model.adapter_prefix)
    discard_state(session, store, job)


def discard_state(session: Session, store: BlobStore, job: FineTuningJob) -> None:
    """Drops a job's resumable training state (a failed or cancelled job keeps none)."""
    session.execute(update(FineTuningJob).where(FineTuningJob.id == job.id)
                    .values(resume_state=None))
    store.delete_prefix(job_prefix(job.project_id, job.id))
