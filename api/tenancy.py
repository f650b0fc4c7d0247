"""Projects, and the keys a fresh install starts with (keys themselves: storage/api_keys.py)."""

import logging
import os
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.api_keys import add_api_key
from storage.db import Database
from storage.ids import new_id
from storage.models import ApiKey, Project

log = logging.getLogger("tuneserve.api")


# A bootstrap key is chosen by a person: shorter than this is refused as guessable.
MIN_BOOTSTRAP_KEY_LENGTH = 32


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(id=new_id("proj_"), name=name, created_at=int(time.time()))
        session.add(project)
        session.flush()
    return project


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
        secret = add_api_key(session, owner.id, bootstrap_key)
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
