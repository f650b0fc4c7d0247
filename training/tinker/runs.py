"""Who holds a Tinker training run's weights: one trainer process at a time, by attempt
number (`tinker_models.trainer_attempt`), alive while it beats (`trainer_beat_at`). The API
claims the next attempt when a request arrives and no trainer beats; a trainer that finds
its attempt superseded stops without writing anything."""

import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.db import rows_affected
from storage.models import TinkerModel

# A trainer beats every BEAT_SECONDS; one silent for SILENT_SECONDS is gone (that covers a
# trainer's start: it beats before it loads the model).
BEAT_SECONDS = 2.0
SILENT_SECONDS = 30


def trainer_alive(run: TinkerModel, now: float) -> bool:
    return run.trainer_beat_at is not None and run.trainer_beat_at > now - SILENT_SECONDS


def claim(session: Session, model_id: str) -> int | None:
    """The next attempt at holding the run, when its trainer is gone (None: one is alive, or
    another API node claimed it first)."""
    run = session.scalar(select(TinkerModel).where(TinkerModel.id == model_id))
    now = int(time.time())
    if run is None or trainer_alive(run, now):
        return None
    attempt = run.trainer_attempt + 1
    claimed = rows_affected(session, update(TinkerModel).where(
        TinkerModel.id == model_id, TinkerModel.trainer_attempt == run.trainer_attempt)
        .values(trainer_attempt=attempt, trainer_beat_at=now)
        .execution_options(synchronize_session=False))
    session.commit()
    return attempt if claimed else None


def beat(session: Session, model_id: str, attempt: int) -> bool:
    """The trainer's beat; False when it no longer holds the run."""
    held = rows_affected(session, update(TinkerModel).where(
        TinkerModel.id == model_id, TinkerModel.trainer_attempt == attempt)
        .values(trainer_beat_at=int(time.time()))
        .execution_options(synchronize_session=False))
    session.commit()
    return held > 0


def release(session: Session, model_id: str, attempt: int) -> None:
    """The claimed attempt could not be started: the run's next request claims another at
    once, instead of waiting out the silence its claim began."""
    session.execute(update(TinkerModel).where(
        TinkerModel.id == model_id, TinkerModel.trainer_attempt == attempt)
        .values(trainer_beat_at=None).execution_options(synchronize_session=False))
    session.commit()
