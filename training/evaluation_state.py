"""The built-in evaluation's state on the job, when the serving engine does it.

A job whose base model the serving engine serves is evaluated there (batched, with the
model as it is served) after it succeeded, so its model is usable at once and the worker
spends no time on it. `job.evaluation` carries the state from creation on:

    pending --claim--> running --finish--> completed
                          |  \\--give_up (attempts left) / release--> pending
                          \\--give_up (none left) / model gone--> failed

`TRANSITIONS` is that diagram as a table (with `None`, no evaluation, as a state: a job is
created with none or pending, its worker may complete it, and a running one may be dropped);
`_write` is the one writer, which checks each move against it. Every write is guarded: the
engine's under the row lock and its claim token (`_held`), the worker's inside the job's
fenced success transition (`completed_by_worker`).

Any API node that serves the base may claim a pending evaluation; a claim is held by a token
and its time, and one older than the claim timeout (its node died) may be taken again. Keys
starting with `_` are this bookkeeping; tenants never see them. A job evaluated by its worker
gets its `completed` evaluation with its success instead."""

from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import states
from storage.models import FineTunedModel, FineTuningJob, JobCheckpoint
from training.jobs import JobStatus


class EvaluationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


# Short names, for the callers that compare with them.
PENDING, RUNNING = EvaluationStatus.PENDING, EvaluationStatus.RUNNING
COMPLETED, FAILED = EvaluationStatus.COMPLETED, EvaluationStatus.FAILED

E = EvaluationStatus
# None: the job has no evaluation (none asked for, or nothing to compare with).
TRANSITIONS: dict[EvaluationStatus | None, frozenset[EvaluationStatus | None]] = {
    # -> pending: created for the engine; -> completed: its worker evaluated it.
    None: frozenset({E.PENDING, E.COMPLETED}),
    E.PENDING: frozenset({E.RUNNING}),
    # -> running: the claim is renewed, or a stale one (its node died) taken over;
    # -> None: no validation example has a text answer to compare with.
    E.RUNNING: frozenset({E.RUNNING, E.PENDING, E.COMPLETED, E.FAILED, None}),
    E.COMPLETED: frozenset(),
    E.FAILED: frozenset(),
}
del E


def status_of(evaluation: dict[str, Any] | None) -> EvaluationStatus | None:
    return None if not evaluation else EvaluationStatus(evaluation["status"])


def check_transition(current: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    states.check_transition(TRANSITIONS, [status_of(current)], status_of(new))


def _write(job: FineTuningJob, new: dict[str, Any] | None) -> None:
    """The one writer of a held (locked) job's evaluation."""
    check_transition(job.evaluation, new)
    job.evaluation = new


def pending() -> dict[str, Any]:
    """A new job's evaluation, when the serving engine is to do it."""
    new = {"status": PENDING}
    check_transition(None, new)
    return new


def completed_by_worker(current: dict[str, Any] | None, summary: dict[str, Any],
                        result_file: str) -> dict[str, Any]:
    """The evaluation its worker made, to write with the job's success (a transition fenced
    by the worker's attempt, so a worker that lost the job writes nothing)."""
    new = {"status": COMPLETED, **summary, "result_file": result_file}
    check_transition(current, new)
    return new


def is_pending(evaluation: dict[str, Any] | None) -> bool:
    return (evaluation or {}).get("status") == PENDING


def public(job: FineTuningJob) -> dict[str, Any] | None:
    """What a tenant sees: no bookkeeping, and no promise on a job that will never have a
    model."""
    evaluation = job.evaluation
    if not evaluation:
        return None
    if evaluation.get("status") in (PENDING, RUNNING) and job.status in (
            JobStatus.FAILED, JobStatus.CANCELLED):
        return None
    return {k: v for k, v in evaluation.items() if not k.startswith("_")}


def checkpoints(session: Session, job_id: str, final_step: int) -> list[tuple[str, int, str]]:
    """The job's kept checkpoints to score beside its final model, by step: (model name,
    step, adapter prefix). The last epoch's checkpoint is the final model itself."""
    rows = session.execute(
        select(JobCheckpoint.fine_tuned_model_checkpoint, JobCheckpoint.step_number,
               FineTunedModel.adapter_prefix)
        .join(FineTunedModel, FineTunedModel.id == JobCheckpoint.fine_tuned_model_checkpoint)
        .where(JobCheckpoint.job_id == job_id).order_by(JobCheckpoint.step_number))
    return [(name, step, prefix) for name, step, prefix in rows if step != final_step]


def candidates(session: Session, bases: list[str], limit: int = 20) -> list[str]:
    """Succeeded jobs on these bases whose evaluation waits for an engine (or may, if its
    claim went stale: `claim` decides)."""
    status = FineTuningJob.evaluation["status"].as_string()
    return list(session.scalars(
        select(FineTuningJob.id)
        .where(FineTuningJob.status == JobStatus.SUCCEEDED,
               FineTuningJob.base_model.in_(bases), status.in_([PENDING, RUNNING]))
        .order_by(FineTuningJob.finished_at).limit(limit)))


def _locked(session: Session, job_id: str) -> FineTuningJob | None:
    # FOR UPDATE on PostgreSQL: two nodes deciding on one row take turns.
    return session.scalar(select(FineTuningJob).where(FineTuningJob.id == job_id)
                          .with_for_update())


def claim(session: Session, job_id: str, token: str, now: float,
          stale_before: float) -> FineTuningJob | None:
    """Takes the job's evaluation for `token`; None if it is not waiting (or another node's
    claim is fresh)."""
    job = _locked(session, job_id)
    if job is None or job.status != JobStatus.SUCCEEDED or not job.evaluation:
        return None
    state = job.evaluation
    fresh = state.get("status") == RUNNING and state.get("_claimed_at", 0) >= stale_before
    if state.get("status") not in (PENDING, RUNNING) or fresh:
        return None
    _write(job, {"status": RUNNING, "_claim": token, "_claimed_at": now,
                 "_attempts": state.get("_attempts", 0)})
    session.flush()  # written even if the caller detaches the row before the commit
    return job


def _held(session: Session, job_id: str, token: str) -> FineTuningJob | None:
    """The job, locked, if this claim still holds its evaluation (which is then set)."""
    job = _locked(session, job_id)
    if job is None or not job.evaluation or job.evaluation.get("_claim") != token:
        return None
    return job


def _claimed(job: FineTuningJob) -> dict[str, Any]:
    """A held job's evaluation (`_held` checked that it is set)."""
    assert job.evaluation is not None
    return job.evaluation


def renew(session: Session, job_id: str, token: str, now: float) -> bool:
    """Keeps a long evaluation's claim fresh; False if it was taken from this node."""
    job = _held(session, job_id, token)
    if job is None:
        return False
    _write(job, {**_claimed(job), "_claimed_at": now})
    return True


def finish(session: Session, job_id: str, token: str, summary: dict[str, Any],
           result_file: str) -> bool:
    """Publishes the evaluation on the job (its file among the job's result files); False,
    changing nothing, if the claim is no longer this node's."""
    job = _held(session, job_id, token)
    if job is None:
        return False
    _write(job, {"status": COMPLETED, **summary, "result_file": result_file})
    job.result_files = [*job.result_files, result_file]
    return True


def give_up(session: Session, job_id: str, token: str, error: str, max_attempts: int,
            final: bool = False) -> EvaluationStatus | None:
    """Ends this node's try: back to pending while attempts are left (not `final`), else
    failed with `error`. Returns the new status, None if the claim was no longer held."""
    job = _held(session, job_id, token)
    if job is None:
        return None
    attempts = int(_claimed(job).get("_attempts", 0)) + 1
    if final or attempts >= max_attempts:
        _write(job, {"status": FAILED, "error": error})
        return FAILED
    _write(job, {"status": PENDING, "_attempts": attempts})
    return PENDING


def release(session: Session, job_id: str, token: str) -> None:
    """Hands the evaluation back untried (no engine could take it now)."""
    job = _held(session, job_id, token)
    if job is not None:
        _write(job, {"status": PENDING,
                     "_attempts": _claimed(job).get("_attempts", 0)})


def drop(session: Session, job_id: str, token: str) -> None:
    """No evaluation after all (no validation example has a text answer to compare with)."""
    job = _held(session, job_id, token)
    if job is not None:
        _write(job, None)
