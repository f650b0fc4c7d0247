"""The FastAPI application and what it opens at start-up."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.chat.router import router as chat_router
from api.checkpoints.router import router as checkpoints_router
from api.completions.router import router as completions_router
from api.dashboard import install_dashboard
from api.errors import COMMON_ERRORS, document_errors, install_error_handlers
from api.evaluator import EngineEvaluator
from api.files.router import router as files_router
from api.fine_tuning.event_stream import StreamSlots
from api.fine_tuning.router import router as fine_tuning_router
from api.gate import RequestGate
from api.graders.router import router as graders_router
from api.key_cache import KeyCache
from api.metrics import install_metrics
from api.models.router import router as models_router
from api.nul_characters import refuse_nul_characters
from api.readiness import Readiness, ReadinessChecks
from api.reaper import run_reaper
from api.request_context import RequestContext
from api.responses.router import router as responses_router
from api.settings import Settings
from api.tenancy import bootstrap_keys
from api.uploads.router import router as uploads_router
from api.webhooks.dispatcher import WebhookDispatcher
from api.webhooks.router import router as webhooks_router
from serving.adapters import AdapterManager
from serving.engine import VLLMEngine
from serving.proxy import Proxy
from serving.remote import ReplicaDirectory
from storage.base_models import base_models
from storage.blob import BlobStore, open_blob_store
from storage.db import Database
from training.executors import open_executor
from training.scheduler import Scheduler

VERSION = "0.1.0"

log = logging.getLogger("tuneserve.api")


async def _start_serving(app: FastAPI, settings: Settings, db: Database,
                         store: BlobStore) -> VLLMEngine | None:
    if not settings.serving_enabled:
        return None
    if settings.serving == "ray":
        app.state.adapters = AdapterManager(settings, db, store, [])
        app.state.adapters.start()
        app.state.replicas = ReplicaDirectory(settings, db, app.state.adapters)
        app.state.replicas.start()
        app.state.proxy = Proxy()
        return None
    spec = base_models(settings).get(settings.served_model)
    if spec is None or not spec.prepared:
        log.warning("not serving: base model %r is not prepared (run `tuneserve models "
                    "prepare`)", settings.served_model)
        return None
    engine = VLLMEngine(settings, spec)
    await engine.start()
    app.state.engine = engine
    app.state.adapters = AdapterManager(settings, db, store, [engine])
    app.state.adapters.start()
    app.state.proxy = Proxy()
    return engine


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.prepare_data_dir()
        db = settings.open_database()
        await run_in_threadpool(db.migrate)
        store = await run_in_threadpool(open_blob_store, settings)
        where_key = await run_in_threadpool(
            bootstrap_keys, db, settings.data_dir, settings.default_project,
            settings.bootstrap_api_key,
        )
        app.state.settings, app.state.db, app.state.store = settings, db, store
        app.state.keys = KeyCache(db)
        app.state.event_streams = StreamSlots(settings.max_event_streams_per_project)
        app.state.keys.start()
        reaper = asyncio.create_task(run_reaper(db, store, settings))
        scheduler = Scheduler(settings, db, store, open_executor(settings))
        scheduler.start()
        webhooks = WebhookDispatcher(settings, db)
        webhooks.start()
        engine = await _start_serving(app, settings, db, store)
        evaluations = None
        if getattr(app.state, "adapters", None) is not None:
            evaluations = asyncio.create_task(EngineEvaluator(
                settings, db, store, app.state.adapters, app.state.proxy).run())
        log.info("tuneserve listening on http://%s:%d (dashboard at /, API at /v1); %s",
                 settings.host, settings.port, where_key)
        try:
            yield
        finally:
            if evaluations is not None:
                evaluations.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await evaluations
            if getattr(app.state, "replicas", None) is not None:
                await app.state.replicas.stop()
            if getattr(app.state, "adapters", None) is not None:
                await app.state.adapters.close()
            if engine is not None:
                await engine.stop()
            await run_in_threadpool(scheduler.stop)
            await webhooks.stop()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await run_in_threadpool(app.state.keys.stop)
            db.dispose()

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
    install_metrics(app)
    v1 = APIRouter(prefix="/v1", responses=COMMON_ERRORS,
                   dependencies=[Depends(refuse_nul_characters)])
    v1.include_router(files_router)
    v1.include_router(uploads_router)
    v1.include_router(fine_tuning_router)
    v1.include_router(checkpoints_router)
    v1.include_router(graders_router)
    v1.include_router(models_router)
    v1.include_router(chat_router)
    v1.include_router(completions_router)
    v1.include_router(responses_router)
    v1.include_router(webhooks_router)
    app.include_router(v1)

    # Async: answered on the event loop, never queued behind a thread pool that is full.
    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict[str, str]:
        engine = getattr(request.app.state, "engine", None)
        replicas = getattr(request.app.state, "replicas", None)
        if replicas is not None:
            ready = sum(r.ready.is_set() for r in replicas.replicas.values())
            return {"status": "ok", "engine": "ready" if ready else "starting",
                    "replicas": str(ready)}
        return {"status": "ok", "engine": engine.state.value if engine else "off"}

    readiness_checks = ReadinessChecks()

    @app.get("/ready", tags=["health"], responses={503: {"model": Readiness}})
    async def ready(request: Request) -> JSONResponse:
        """Whether this node can serve: its database, its blob store and its model engine
        answer (each check bounded in time). For a load balancer; `/health` is liveness."""
        checks = await readiness_checks.run(request.app)
        ok = all(state in ("ok", "off") for state in checks.values())
        return JSONResponse(Readiness(status="ready" if ok else "not_ready",
                                      checks=checks).model_dump(),
                            status_code=200 if ok else 503)

    install_dashboard(app)
    return app
