"""Projects and their API keys. A key belongs to one project; only its sha256 is stored."""

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from storage.db import Database
from storage.ids import new_id
from storage.models import ApiKey, Project

log = logging.getLogger("tuneserve.api")


# PostgreSQL NOTIFY channel of revoked keys' hashes.
KEYS_CHANNEL = "tuneserve_key_revoked"
# A bootstrap key is chosen by a person: shorter than this is refused as guessable.
MIN_BOOTSTRAP_KEY_LENGTH = 32


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(id=new_id("proj_"), name=name, created_at=int(time.time()))
        session.add(project)
        session.flush()
    return project


def add_api_key(session: Session, project: Project, secret: str | None = None) -> str:
    """Stores a key for `project` and returns the secret (shown once, never stored)."""
    secret = secret or "sk-proj-" + secrets.token_urlsafe(36)
    session.add(
        ApiKey(
            id=new_id("key_"),
            project_id=project.id,
            key_hash=hash_key(secret),
            redacted=f"{secret[:8]}...{secret[-4:]}",
            created_at=int(time.time()),
        )
    )
    session.flush()
    return secret


def project_for_key(session: Session, digest: str) -> Project | None:
    """The project of the unrevoked key whose sha256 is `digest`."""
    return session.scalar(select(Project).join(ApiKey, ApiKey.project_id == Project.id)
                          .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))


def list_keys(session: Session) -> list[tuple[ApiKey, str]]:
    """Every key (revoked ones too) with its project's name, oldest first."""
    rows = session.execute(select(ApiKey, Project.name)
                           .join(Project, ApiKey.project_id == Project.id)
                           .order_by(ApiKey.seq))
    return [(key, name) for key, name in rows]


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revokes the key (None: no such key). On PostgreSQL, every API process drops it from
    its cache as this transaction commits (api/key_cache.py listens)."""
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = int(time.time())
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_notify(:channel, :digest)"),
                            {"channel": KEYS_CHANNEL, "digest": key.key_hash})
    return key


def bootstrap_keys(db: Database, data_dir: Path, project: str,
                   bootstrap_key: str | None) -> str:
    """Makes sure a fresh install can be used: with an empty key store, creates the default
    project with the configured key, or with a new one written to `{data_dir}/api_key`.
    Returns where a user finds a key, for the start-up line."""
    key_file = (data_dir / "api_key").resolve()
    # Under the start-up lock: API nodes started together create one default project.
    with db.startup_lock(), db.session() as session:
        if session.scalar(select(ApiKey.seq).limit(1)) is not None:
            return (f"API key in {key_file}" if key_file.exists()
                    else "API keys: `tuneserve keys list`")
        owner = get_or_create_project(session, project)
        secret = add_api_key(session, owner, bootstrap_key)
    if bootstrap_key:
        log.info("created project %r with the key from TUNESERVE_BOOTSTRAP_API_KEY", project)
        return "API key from TUNESERVE_BOOTSTRAP_API_KEY"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(key_file, 0o600)
    log.info("created project %r; its API key is in %s", project, key_file)
    return f"API key in {key_file}"
