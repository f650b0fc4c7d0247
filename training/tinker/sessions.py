"""A Tinker session's states (`tinker_sessions`): `active` from `create_session` until its
client finishes it or stops beating for `SESSION_IDLE_SECONDS`. The API opens and ends
sessions (api/tinker/service.py); a run's trainer lives as long as its session."""

import time
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import TinkerSession

# A session whose client has not beaten for this long is gone (the SDK beats every 10 s).
SESSION_IDLE_SECONDS = 600


class SessionStatus(StrEnum):
    ACTIVE = "active"
    FINISHED = "finished"


TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.ACTIVE: frozenset({SessionStatus.FINISHED}),
    SessionStatus.FINISHED: frozenset(),
}


def is_live(row: TinkerSession, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return (row.status == SessionStatus.ACTIVE
            and row.last_heartbeat_at > now - SESSION_IDLE_SECONDS)


def session_live(session: Session, session_id: str) -> bool:
    row = session.scalar(select(TinkerSession).where(TinkerSession.id == session_id))
    return row is not None and is_live(row)
