"""Dependencies injected into routes through `Annotated` aliases."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.gate import authenticate, authenticate_tinker
from api.services import Services, services_of
from api.settings import Settings
from api.tinker.answers import AnswerWatch
from storage.blob import BlobStore
from storage.db import Database
from storage.models import Project
from training.tinker.launch import TinkerTrainers

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk-…`")
_tinker_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="A project's key, as the Tinker SDK sends it: `tml-…`")


# `async` although they never wait: FastAPI runs a plain `def` dependency in its thread
# pool, and a thread hop per request costs the chat path's time to first token a scheduler
# slice on a busy machine.
async def _services(request: Request) -> Services:
    return services_of(request.app)


AppServices = Annotated[Services, Depends(_services)]


async def _settings(services: AppServices) -> Settings:
    return services.settings


async def _database(services: AppServices) -> Database:
    return services.db


async def _storage(services: AppServices) -> BlobStore:
    return services.store


def _session(db: Annotated[Database, Depends(_database)]) -> Iterator[Session]:
    # Routes that write commit themselves, so a failed commit reaches the client.
    with db.sessions() as session:
        yield session


AppSettings = Annotated[Settings, Depends(_settings)]
async def _tinker_trainers(services: AppServices) -> TinkerTrainers:
    return services.tinker_trainers


async def _tinker_answers(services: AppServices) -> AnswerWatch:
    return services.tinker_answers


DB = Annotated[Session, Depends(_session)]
DBFactory = Annotated[Database, Depends(_database)]
Storage = Annotated[BlobStore, Depends(_storage)]
Trainers = Annotated[TinkerTrainers, Depends(_tinker_trainers)]
Answers = Annotated[AnswerWatch, Depends(_tinker_answers)]


async def _current_project(
    request: Request, services: AppServices,
    # Declared for the OpenAPI document; the gate (api/gate.py) checked the key already.
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Project:
    project = getattr(request.state, "project", None)
    if isinstance(project, Project):
        return project
    return await authenticate(services.keys, request.headers.get("authorization"))


CurrentProject = Annotated[Project, Depends(_current_project)]


async def _tinker_project(
    request: Request, services: AppServices,
    # Declared for the OpenAPI document; the gate checked the key already.
    key: Annotated[str | None, Depends(_tinker_key)],
) -> Project:
    project = getattr(request.state, "project", None)
    if isinstance(project, Project):
        return project
    return await authenticate_tinker(services.keys, key)


TinkerProject = Annotated[Project, Depends(_tinker_project)]
