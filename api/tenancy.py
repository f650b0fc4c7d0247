"""Projects and their API keys. A key belongs to one project; only its sha256 is stored."""

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.ids import new_id
from storage.models import ApiKey, Project

log = logging.getLogger("tuneserve.api")


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


def project_for_key(session: Session, secret: str) -> Project | None:
    return session.scalar(
        select(Project).join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.key_hash == hash_key(secret))
    )


def bootstrap_keys(db: Database, data_dir: Path, project: str, bootstrap_key: str | None) -> None:
    """Makes sure a fresh install can be used: with an empty key store, creates the default
    project with the configured key, or with a new one written to `{data_dir}/api_key`."""
    # Under the start-up lock: API nodes started together create one default project.
    with db.startup_lock(), db.session() as session:
        if session.scalar(select(ApiKey.seq).limit(1)) is not None:
            return
        owner = get_or_create_project(session, project)
        secret = add_api_key(session, owner, bootstrap_key)
    if bootstrap_key:
        log.info("created project %r with the key from TUNESERVE_BOOTSTRAP_API_KEY", project)
        return
    key_file = data_dir / "api_key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(key_file, 0o600)
    log.warning("created project %r; its API key is in %s", project, key_file.resolve())
    print(f"tuneserve: created project {project!r}; its API key is in {key_file.resolve()}",
          flush=True)
