"""Tombstones of deleted rows that lists page through (see `CursorTombstone`)."""

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from storage.models import (
    CheckpointPermission,
    CursorTombstone,
    File,
    JobCheckpoint,
    WebhookEndpoint,
)

# The deletable rows of the paged lists, and what each list is scoped to (jobs and their
# events are never deleted alone).
SCOPES: dict[type, str] = {File: "project_id", JobCheckpoint: "job_id",
                           CheckpointPermission: "model_id", WebhookEndpoint: "project_id"}
KEEP_SECONDS = 86_400


def record_deletions(sessions: sessionmaker[Session]) -> None:
    """Every session of `sessions` leaves a tombstone for each paged row it deletes."""

    def before_flush(session: Session, *_: object) -> None:
        bury(session, [row for row in session.deleted if type(row) in SCOPES])

    event.listen(sessions, "before_flush", before_flush)


def bury(session: Session, rows: Iterable[Any]) -> None:
    """Tombstones for `rows`, about to be deleted. Straight on the connection (no flush of
    its own), and once: two deletes of one row at once leave one tombstone, no error."""
    now = time.time()
    values = [{"id": row.id, "kind": row.__tablename__, "seq": row.seq,
               "scope": getattr(row, SCOPES[type(row)]), "deleted_at": now} for row in rows]
    if not values:
        return
    connection = session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(CursorTombstone).values(values).on_conflict_do_nothing())


def deleted_position(session: Session, kind: str, scope: str, object_id: str) -> int | None:
    """The seq a deleted row of table `kind` in list `scope` had; None if none says."""
    return session.scalar(select(CursorTombstone.seq).where(
        CursorTombstone.id == object_id, CursorTombstone.kind == kind,
        CursorTombstone.scope == scope))


def forget_old(session: Session, now: float) -> None:
    session.execute(delete(CursorTombstone).where(
        CursorTombstone.deleted_at < now - KEEP_SECONDS))
