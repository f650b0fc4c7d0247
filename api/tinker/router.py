"""`/api/v1`: the Tinker SDK's routes. The key comes as `X-API-Key` (api/gate.py checks it
before any route runs); everything a route touches is the key's project's."""

from fastapi import APIRouter

from api.deps import DB, AppSettings, TinkerProject
from api.errors import error_responses
from api.tinker import service
from api.tinker.schemas import (
    ClientConfig,
    ClientConfigRequest,
    CreateSessionRequest,
    CreateSessionResponse,
    DynamicConfig,
    FinishSessionRequest,
    Health,
    ServerCapabilities,
    SessionHeartbeatRequest,
    SessionHeartbeatResponse,
)

router = APIRouter(prefix="/api/v1", tags=["tinker"],
                   responses=error_responses(400, 401, 413, 500, 503))


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
def finish_session(session_id: str, body: FinishSessionRequest, project: TinkerProject,
                   session: DB) -> None:
    service.finish(session, project, session_id, body)
