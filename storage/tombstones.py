"""Tombstones of deleted rows that lists page through (see `CursorTombstone`)."""

import time

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from storage.models import (
    CheckpointPermission,
    CursorTombstone,
    File,
    JobCheckpoint,
    WebhookEndpoint,
)

# The deletable rows of the paged lists (jobs and their events are never deleted alone).
PAGED = (File, JobCheckpoint, CheckpointPermission, WebhookEndpoint)
KEEP_SECONDS = 86_400


def record_deletions(sessions: sessionmaker[Session]) -> None:
    """Every session of `sessions` leaves a tombstone for each paged row it deletes."""

    def before_flush(session: Session, *_: object) -> None:
        now = time.time()
        for row in list(session.deleted):
            if isinstance(row, PAGED):
                session.merge(CursorTombstone(id=row.id, kind=row.__tablename__, seq=row.seq,
                                              deleted_at=now))

    event.listen(sessions, "before_flush", before_flush)


def deleted_position(session: Session, kind: str, object_id: str) -> int | None:
    """The seq a deleted row of table `kind` had; None if no tombstone says."""
    return session.scalar(select(CursorTombstone.seq).where(
        CursorTombstone.id == object_id, CursorTombstone.kind == kind))


def forget_old(session: Session, now: float) -> None:
    session.execute(delete(CursorTombstone).where(
        CursorTombstone.deleted_at < now - KEEP_SECONDS))
