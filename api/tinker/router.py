"""`/api/v1`: the Tinker SDK's routes. The key comes as `X-API-Key` (api/gate.py checks it
before any route runs); everything a route touches is the key's project's."""

import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path

from api.deps import DB, AppSettings, DBFactory, TinkerProject
from api.errors import error_responses
from api.tinker import service
from api.tinker.schemas import (
    ClientConfig,
    ClientConfigRequest,
    CreateModelRequest,
    CreateSessionRequest,
    CreateSessionResponse,
    DynamicConfig,
    FinishSessionRequest,
    GetInfoRequest,
    GetInfoResponse,
    Health,
    RetrieveFutureRequest,
    ServerCapabilities,
    SessionHeartbeatRequest,
    SessionHeartbeatResponse,
    TryAgain,
    UntypedFuture,
)

router = APIRouter(prefix="/api/v1", tags=["tinker"],
                   responses=error_responses(400, 401, 413, 500, 503))

# How long one `retrieve_future` waits for a pending answer before it says try again (the SDK
# asks again at once): a long poll, so a result is seen as it lands.
LONG_POLL_SECONDS = 5.0


@router.post("/client/config", response_model=ClientConfig)
async def client_config(body: ClientConfigRequest, project: TinkerProject) -> ClientConfig:
    return ClientConfig()


@router.post("/client/dynamic_config", response_model=DynamicConfig)
async def client_dynamic_config(body: ClientConfigRequest,
                                project: TinkerProject) -> DynamicConfig:
    return DynamicConfig()


@router.get("/healthz", response_model=Health)
async def healthz(project: TinkerProject) -> Health:
    return Health()


@router.get("/get_server_capabilities", response_model=ServerCapabilities)
async def get_server_capabilities(project: TinkerProject,
                                  settings: AppSettings) -> ServerCapabilities:
    return service.capabilities(settings)


@router.post("/create_session", response_model=CreateSessionResponse,
             responses=error_responses(429))
def create_session(body: CreateSessionRequest, project: TinkerProject,
                   session: DB) -> CreateSessionResponse:
    return CreateSessionResponse(session_id=service.create_session(session, project, body))


@router.post("/session_heartbeat", response_model=SessionHeartbeatResponse,
             responses=error_responses(404, 410))
def session_heartbeat(body: SessionHeartbeatRequest, project: TinkerProject,
                      session: DB) -> SessionHeartbeatResponse:
    service.heartbeat(session, project, body.session_id)
    return SessionHeartbeatResponse()


@router.post("/sessions/{session_id}/finish", status_code=200, responses=error_responses(404))
def finish_session(session_id: Annotated[str, Path(max_length=64)], body: FinishSessionRequest,
                   project: TinkerProject,
                   session: DB) -> None:
    service.finish(session, project, session_id, body)


@router.post("/create_model", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def create_model(body: CreateModelRequest, project: TinkerProject, session: DB,
                 settings: AppSettings) -> UntypedFuture:
    return service.create_model(session, settings, project, body)


@router.post("/get_info", response_model=GetInfoResponse, responses=error_responses(404))
def get_info(body: GetInfoRequest, project: TinkerProject, session: DB,
             settings: AppSettings) -> GetInfoResponse:
    return service.get_info(session, settings, project, body.model_id)


@router.post("/retrieve_future", response_model=dict[str, Any],
             responses=error_responses(404))
async def retrieve_future(body: RetrieveFutureRequest, project: TinkerProject,
                          db: DBFactory) -> dict[str, Any]:
    """The request's answer as the SDK reads it (its result, or `{error, category}`), or
    `{"type": "try_again"}` while it is still being worked on."""

    def look() -> dict[str, Any] | None:
        with db.session() as session:
            return service.future_result(session, project, body.request_id)

    deadline = time.monotonic() + LONG_POLL_SECONDS
    while (result := await anyio.to_thread.run_sync(look)) is None:
        if time.monotonic() >= deadline:
            return TryAgain(request_id=body.request_id).model_dump()
        await anyio.sleep(0.1)
    return result
