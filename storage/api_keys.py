"""API keys. A key belongs to one project; only its sha256 is stored. A key may also belong
to a fine-tuning job: the worker of a reinforcement job whose grader asks a model of this
server mints one for the job's project, and it is revoked when the worker stops and, at the
latest, when the job ends."""

import hashlib
import secrets
import time

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from storage.ids import new_id
from storage.models import ApiKey, Project

# PostgreSQL NOTIFY channel of revoked keys' hashes.
KEYS_CHANNEL = "tuneserve_key_revoked"
# How a new key begins: as OpenAI's project keys, or as the Tinker SDK requires of a key
# (it refuses any other before sending it). Either kind is the project's key everywhere.
OPENAI_KEY_PREFIX = "sk-proj-"
TINKER_KEY_PREFIX = "tml-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_api_key(session: Session, project_id: str, secret: str | None = None,
                job_id: str | None = None, prefix: str = OPENAI_KEY_PREFIX) -> str:
    """Stores a key for the project (and the job, when given) and returns the secret (shown
    once, never stored)."""
    secret = secret or prefix + secrets.token_urlsafe(36)
    session.add(ApiKey(id=new_id("key_"), project_id=project_id, key_hash=hash_key(secret),
                       redacted=f"{secret[:8]}...{secret[-4:]}", created_at=int(time.time()),
                       job_id=job_id))
    session.flush()
    return secret


def project_for_key(session: Session, digest: str) -> Project | None:
    """The project of the unrevoked key whose sha256 is `digest`."""
    return session.scalar(select(Project).join(ApiKey, ApiKey.project_id == Project.id)
                          .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))


def person_keys(project_id: str) -> Select[ApiKey]:
    """The project's live keys that a person made (through the API or `tuneserve keys`):
    the keys a job's worker mints are the job's to revoke, not listed with them."""
    return select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.job_id.is_(None),
                                ApiKey.revoked_at.is_(None))


def list_keys(session: Session) -> list[tuple[ApiKey, str]]:
    """Every key (revoked ones too) with its project's name, oldest first."""
    rows = session.execute(select(ApiKey, Project.name)
                           .join(Project, ApiKey.project_id == Project.id)
                           .order_by(ApiKey.seq))
    return [(key, name) for key, name in rows]


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revokes the key (None: no such key)."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if key is not None:
        _revoke(session, key)
    return key


def revoke_hashed(session: Session, digest: str) -> None:
    """Revokes the key whose sha256 is `digest`, if there is one."""
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is not None:
        _revoke(session, key)


def revoke_job_keys(session: Session, job_id: str) -> int:
    """Revokes the job's keys still valid; returns how many."""
    keys = session.scalars(select(ApiKey).where(ApiKey.job_id == job_id,
                                                ApiKey.revoked_at.is_(None))).all()
    for key in keys:
        _revoke(session, key)
    return len(keys)


def _revoke(session: Session, key: ApiKey) -> None:
    """On PostgreSQL, every API process drops the key from its cache as this transaction
    commits (api/background/key_cache.py listens)."""
    if key.revoked_at is not None:
        return
    key.revoked_at = int(time.time())
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :digest)"),
                        {"channel": KEYS_CHANNEL, "digest": key.key_hash})
