"""An Upload's state (`/v1/uploads`), in the shape every machine here has (`storage/states.py`).

    pending --complete--> completed
       |----cancel------> cancelled
       \\----its time passes (the reaper writes it)--> expired

A pending upload whose `expires_at` has passed is expired before the reaper writes it so:
`status_of` says so on read (requests check it when they start). `finish` is the one writer:
a conditional UPDATE from pending, so of a completion and the reaper racing on one upload
exactly one wins, and the reaper expires only uploads past their time."""

import time
from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage import states
from storage.models import Upload


class UploadStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


U = UploadStatus
TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    U.PENDING: frozenset({U.COMPLETED, U.CANCELLED, U.EXPIRED}),
    U.COMPLETED: frozenset(),
    U.CANCELLED: frozenset(),
    U.EXPIRED: frozenset(),
}
del U


def status_of(row: Upload, now: int | None = None) -> UploadStatus:
    status = UploadStatus(row.status)
    if status is UploadStatus.PENDING and row.expires_at <= (now or int(time.time())):
        return UploadStatus.EXPIRED
    return status


def finish(session: Session, upload_ids: Sequence[str], status: UploadStatus,
           file_id: str | None = None, now: int | None = None) -> list[str]:
    """Moves the pending uploads among `upload_ids` to `status`; returns those it moved (an
    upload another request or node moved first, or one not yet past its time for expired,
    is left as it is)."""
    states.check_transition(TRANSITIONS, [UploadStatus.PENDING], status)
    query = update(Upload).where(Upload.id.in_(upload_ids),
                                 Upload.status == UploadStatus.PENDING)
    if status is UploadStatus.EXPIRED:
        query = query.where(Upload.expires_at <= (now or int(time.time())))
    moved = session.execute(
        query
        .values(status=status, file_id=file_id)
        .returning(Upload.id)
    )
    return list(moved.scalars())
