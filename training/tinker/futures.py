"""Tinker futures in the DB: one row per request (`tinker_futures`), shared by the API that
takes the request and the trainer that does its work.

`pending` until the work is done, then `succeeded` with the answer the SDK reads, or
`failed`. A request the tenant got wrong (a loss it does not know, tokens out of range)
succeeds with `{"error", "category": "user"}`: that is how the SDK is told not to retry it
(a bare 400 it retries). Every write is a conditional UPDATE on `pending`, and a trainer's
also on still holding its run (`tinker_models.trainer_attempt`): a trainer that was replaced
changes nothing."""

import time
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from storage.db import rows_affected
from storage.models import TinkerFuture, TinkerModel
from storage.states import check_transition


class FutureStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TRANSITIONS: dict[FutureStatus, frozenset[FutureStatus]] = {
    FutureStatus.PENDING: frozenset({FutureStatus.SUCCEEDED, FutureStatus.FAILED}),
    FutureStatus.SUCCEEDED: frozenset(),
    FutureStatus.FAILED: frozenset(),
}


def user_error(message: str) -> dict[str, Any]:
    """The answer to a request the tenant got wrong: the SDK raises it and does not retry."""
    return {"error": message, "category": "user"}


def server_error(message: str) -> dict[str, Any]:
    return {"error": message, "category": "server"}


def finish(session: Session, future_id: str, status: FutureStatus, *,
           result: dict[str, Any] | None = None, result_proto: bytes | None = None,
           model_id: str | None = None, attempt: int | None = None) -> bool:
    """Writes the future's answer; False if it was already answered or (with `model_id`
    and `attempt`) that trainer no longer holds the run."""
    check_transition(TRANSITIONS, [FutureStatus.PENDING], status)
    fence = [TinkerFuture.id == future_id, TinkerFuture.status == FutureStatus.PENDING]
    if model_id is not None and attempt is not None:
        fence.append(exists().where(TinkerModel.id == model_id,
                                    TinkerModel.trainer_attempt == attempt))
    written = rows_affected(session, update(TinkerFuture).where(*fence).values(
        status=status, result=result, result_proto=result_proto, payload=None,
        finished_at=int(time.time())).execution_options(synchronize_session=False))
    session.commit()
    return written > 0


def next_request(session: Session, model_id: str) -> TinkerFuture | None:
    """The run's pending request with the lowest `seq_id`: the one its trainer does next."""
    return session.scalar(select(TinkerFuture)
                          .where(TinkerFuture.model_id == model_id,
                                 TinkerFuture.status == FutureStatus.PENDING,
                                 TinkerFuture.seq_id.is_not(None))
                          .order_by(TinkerFuture.seq_id).limit(1))


def last_done_seq_id(session: Session, model_id: str) -> int:
    """The highest `seq_id` of the run already answered (0 before any): requests are done in
    order, so the next one is this plus one."""
    done = session.scalar(select(TinkerFuture.seq_id)
                          .where(TinkerFuture.model_id == model_id,
                                 TinkerFuture.status != FutureStatus.PENDING,
                                 TinkerFuture.seq_id.is_not(None))
                          .order_by(TinkerFuture.seq_id.desc()).limit(1))
    return int(done or 0)


def answered_any(session: Session, model_id: str) -> bool:
    """Whether the run's trainer has answered one of its requests (its weights have moved
    from a fresh LoRA, or been loaded)."""
    return session.scalar(select(TinkerFuture.id).where(
        TinkerFuture.model_id == model_id, TinkerFuture.status != FutureStatus.PENDING,
        TinkerFuture.seq_id.is_not(None)).limit(1)) is not None


def fail_abandoned_samples(session: Session, taken_before: int, batch: int = 500) -> int:
    """Fails the sample requests still pending that were taken before `taken_before`: the API
    node that took each samples it itself and answers within its engine's read timeout, so
    one older has lost its node (it stopped mid-sample). Returns how many."""
    ids = list(session.scalars(select(TinkerFuture.id).where(
        TinkerFuture.kind == "sample", TinkerFuture.status == FutureStatus.PENDING,
        TinkerFuture.created_at < taken_before).limit(batch)))
    answer = server_error("The server that took this sample stopped before it answered; "
                          "sample again.")
    return sum(finish(session, i, FutureStatus.FAILED, result=answer) for i in ids)
