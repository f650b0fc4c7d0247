"""The FastAPI application: its routes and middleware. What it starts and stops with its
lifespan is api/services.py."""

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from api.chat.completions.router import router as chat_completions_router
from api.completions.router import router as completions_router
from api.dashboard import install_dashboard
from api.deps import AppServices
from api.errors import COMMON_ERRORS, document_errors, install_error_handlers
from api.files.router import router as files_router
from api.fine_tuning.alpha.graders.router import router as graders_router
from api.fine_tuning.checkpoints.permissions.router import router as permissions_router
from api.fine_tuning.jobs.checkpoints.router import router as job_checkpoints_router
from api.fine_tuning.jobs.router import router as jobs_router
from api.gate import RequestGate
from api.me.router import router as me_router
from api.metrics import install_metrics
from api.models.router import router as models_router
from api.nul_characters import refuse_nul_characters
from api.organization.projects.api_keys.router import router as project_api_keys_router
from api.readiness import Readiness, ReadinessChecks
from api.request_context import RequestContext
from api.responses.router import router as responses_router
from api.services import services_of, start_services
from api.settings import Settings
from api.tinker.router import router as tinker_router
from api.uploads.router import router as uploads_router
from api.webhook_endpoints.deliveries.router import router as webhook_deliveries_router
from api.webhook_endpoints.router import router as webhook_endpoints_router
from api.webhook_event_types.router import router as webhook_event_types_router

VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="tuneserve",
        version=VERSION,
        description="Self-hosted, OpenAI-compatible fine-tuning and LoRA serving.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_errors(app)
    app.add_middleware(RequestGate, inference_cap=settings.max_inference_body_bytes,
                       control_cap=settings.max_control_body_bytes)
    # Added last, so outermost: the id and timing cover the gate's own answers too.
    app.add_middleware(RequestContext)
    install_metrics(app, lambda: services_of(app))
    v1 = APIRouter(prefix="/v1", responses=COMMON_ERRORS,
                   dependencies=[Depends(refuse_nul_characters)])
    # One router per package, each package named by its URL (tests/test_layout.py); in this
    # order, the order of the OpenAPI document's paths.
    for router in (files_router, uploads_router, jobs_router, job_checkpoints_router,
                   permissions_router, graders_router, models_router, chat_completions_router,
                   completions_router, responses_router, webhook_endpoints_router,
                   webhook_deliveries_router, webhook_event_types_router, me_router,
                   project_api_keys_router):
        v1.include_router(router)
    app.include_router(v1)
    app.include_router(tinker_router, dependencies=[Depends(refuse_nul_characters)])

    # Async: answered on the event loop, never queued behind a thread pool that is full.
    @app.get("/health", tags=["health"])
    async def health(services: AppServices) -> dict[str, str]:
        serving = services.serving
        if serving is not None and serving.replicas is not None:
            ready = sum(r.ready.is_set() for r in serving.replicas.replicas.values())
            return {"status": "ok", "engine": "ready" if ready else "starting",
                    "replicas": str(ready)}
        engine = serving.engine if serving is not None else None
        return {"status": "ok", "engine": engine.state.value if engine else "off"}

    readiness_checks = ReadinessChecks()

    @app.get("/ready", tags=["health"], responses={503: {"model": Readiness}})
    async def ready(services: AppServices) -> JSONResponse:
        """Whether this node can serve: its database, its blob store and its model engine
        answer (each check bounded in time). For a load balancer; `/health` is liveness."""
        checks = await readiness_checks.run(services)
        ok = all(state in ("ok", "off") for state in checks.values())
        return JSONResponse(Readiness(status="ready" if ok else "not_ready",
                                      checks=checks).model_dump(),
                            status_code=200 if ok else 503)

    install_dashboard(app)
    return app
