"""A project's own keys: the project in the path must be the caller's, and only the keys a
person made are listed or revoked (a job's keys are its worker's, revoked as the job ends).
Making and revoking go through `storage/api_keys.py`, as `tuneserve keys` does, so a
revocation reaches every API process's key cache as it commits."""

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from storage import api_keys
from storage.models import ApiKey, Project


def check_own_project(caller_project_id: str, project_id: str) -> None:
    """Another project's id is a 404, as if it did not exist."""
    if project_id != caller_project_id:
        raise not_found("project", project_id, "project_id")


def project_keys(project_id: str) -> Select[ApiKey]:
    return api_keys.person_keys(project_id)


def get_key(session: Session, project_id: str, key_id: str) -> ApiKey:
    row = session.scalar(project_keys(project_id).where(ApiKey.id == key_id))
    if row is None:
        raise not_found("API key", key_id, "key_id")
    return row


def create_key(session: Session, project_id: str, *, max_keys: int) -> tuple[ApiKey, str]:
    """The new key's row and its secret (the one time it is readable)."""
    # Locks the project's row (PostgreSQL), so two creations at once cannot pass the limit.
    session.execute(select(Project.seq).where(Project.id == project_id).with_for_update())
    count = session.scalar(project_keys(project_id).with_only_columns(func.count())) or 0
    if count >= max_keys:
        raise APIError(400, f"This project already has {max_keys} API keys, the most it may "
                       "have; revoke one first.", code="api_key_limit_reached")
    secret = api_keys.add_api_key(session, project_id)
    return _key_of(session, secret), secret


def _key_of(session: Session, secret: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == api_keys.hash_key(secret)))
    assert row is not None, "the key just added"
    return row


def revoke_key(session: Session, project_id: str, key_id: str) -> None:
    api_keys.revoke_key(session, get_key(session, project_id, key_id).id)
