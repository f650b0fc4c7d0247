"""Dependencies injected into routes through `Annotated` aliases."""

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import APIError
from api.settings import Settings
from api.tenancy import project_for_key
from storage.blob import BlobStore
from storage.db import Database
from storage.models import Project

# Valid keys seen lately, so a chat request costs no DB round trip for its key. Keys are
# never changed in place, so the only staleness is a few seconds after a key is removed.
_KEY_CACHE_SECONDS = 30.0
_KEY_CACHE_SIZE = 10_000
_known_keys: dict[str, tuple[Project, float]] = {}

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk-…`")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _database(request: Request) -> Database:
    return request.app.state.db


def _storage(request: Request) -> BlobStore:
    return request.app.state.store


def _session(db: Annotated[Database, Depends(_database)]) -> Iterator[Session]:
    # Routes that write commit themselves, so a failed commit reaches the client.
    with db.sessions() as session:
        yield session


AppSettings = Annotated[Settings, Depends(_settings)]
DB = Annotated[Session, Depends(_session)]
DBFactory = Annotated[Database, Depends(_database)]
Storage = Annotated[BlobStore, Depends(_storage)]


async def _current_project(
    db: DBFactory,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Project:
    if credentials is None or not credentials.credentials:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )

    secret = credentials.credentials
    cached = _known_keys.get(secret)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]

    def lookup() -> Project | None:
        with db.session() as session:
            return project_for_key(session, secret)

    project = await run_in_threadpool(lookup)
    if project is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    if len(_known_keys) >= _KEY_CACHE_SIZE:
        _known_keys.clear()
    _known_keys[secret] = (project, time.monotonic() + _KEY_CACHE_SECONDS)
    return project


CurrentProject = Annotated[Project, Depends(_current_project)]
