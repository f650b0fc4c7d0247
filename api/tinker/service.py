"""What the Tinker API's routes do, with their SQL: sessions so far.

A session is `active` from `create_session` until its client finishes it (first reason
wins) or stops beating for `SESSION_IDLE_SECONDS`; only active sessions count against the
project's bound. Everything is the project's own: another project's session id is not found."""

import time
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from api.errors import APIError
from api.settings import Settings
from api.tinker.schemas import (
    CreateSessionRequest,
    FinishSessionRequest,
    ServerCapabilities,
    SupportedModel,
)
from storage.base_models import base_models
from storage.ids import new_id
from storage.models import Project, TinkerSession
from storage.states import check_transition

# A session whose client has not beaten for this long is gone (the SDK beats every 10 s).
SESSION_IDLE_SECONDS = 600
# Active sessions one project may hold at once: a client that opens sessions in a loop must
# not fill the table.
MAX_ACTIVE_SESSIONS = 256


class SessionStatus(StrEnum):
    ACTIVE = "active"
    FINISHED = "finished"


SESSION_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.ACTIVE: frozenset({SessionStatus.FINISHED}),
    SessionStatus.FINISHED: frozenset(),
}


def capabilities(settings: Settings) -> ServerCapabilities:
    """The bases a project can use here, as `/v1/models` lists them: the served ones (which
    sample), and where jobs may train bases that are not served, every prepared one."""
    served = settings.served_bases() or []
    return ServerCapabilities(supported_models=[
        SupportedModel(model_name=spec.name, sampleable=spec.name in served,
                       trainable=spec.name in served or settings.train_unserved_bases)
        for spec in base_models(settings).values()
        if spec.prepared and (spec.name in served or settings.train_unserved_bases)])


def _live(project_id: str, now: int) -> ColumnElement[bool]:
    return and_(TinkerSession.project_id == project_id,
                TinkerSession.status == SessionStatus.ACTIVE,
                TinkerSession.last_heartbeat_at > now - SESSION_IDLE_SECONDS)


def create_session(session: Session, project: Project, body: CreateSessionRequest) -> str:
    now = int(time.time())
    active = session.scalar(select(func.count()).select_from(TinkerSession)
                            .where(_live(project.id, now)))
    if (active or 0) >= MAX_ACTIVE_SESSIONS:
        raise APIError(429, f"This project has {MAX_ACTIVE_SESSIONS} active Tinker sessions, "
                       "the most it may hold; finish one (ServiceClient.close()) first.",
                       code="too_many_sessions")
    row = TinkerSession(id=new_id("session-"), project_id=project.id,
                        status=SessionStatus.ACTIVE, sdk_version=body.sdk_version,
                        tags=body.tags, user_metadata=body.user_metadata or {},
                        created_at=now, last_heartbeat_at=now)
    session.add(row)
    session.commit()
    return row.id


def _own(session: Session, project: Project, session_id: str) -> TinkerSession:
    row = session.scalar(select(TinkerSession).where(TinkerSession.id == session_id,
                                                     TinkerSession.project_id == project.id))
    if row is None:
        raise APIError(404, f"No session '{session_id}' in this project.", param="session_id",
                       code="session_not_found")
    return row


def heartbeat(session: Session, project: Project, session_id: str) -> None:
    """Keeps the session alive; a finished or expired one answers 410, which stops the
    SDK's heartbeat loop."""
    row = _own(session, project, session_id)
    now = int(time.time())
    if (row.status != SessionStatus.ACTIVE
            or row.last_heartbeat_at <= now - SESSION_IDLE_SECONDS):
        raise APIError(410, f"Session '{session_id}' has ended.", param="session_id",
                       code="session_ended")
    session.execute(update(TinkerSession).where(TinkerSession.seq == row.seq)
                    .values(last_heartbeat_at=now))
    session.commit()


def finish(session: Session, project: Project, session_id: str,
           body: FinishSessionRequest) -> None:
    """Ends the session; the first reason stays (a second finish changes nothing)."""
    row = _own(session, project, session_id)
    check_transition(SESSION_TRANSITIONS, [SessionStatus.ACTIVE], SessionStatus.FINISHED)
    # Fenced on the state read: two finishes racing, one writes.
    session.execute(update(TinkerSession)
                    .where(TinkerSession.seq == row.seq,
                           TinkerSession.status == SessionStatus.ACTIVE)
                    .values(status=SessionStatus.FINISHED, finish_reason=body.reason.type,
                            finished_at=int(time.time())))
    session.commit()
