"""The API process's parts, typed: what the routes, the request gate, `/health`, `/ready` and
`/metrics` use, built in one place (`start_services`) in the order they depend on each other,
and stopped in reverse (`Services.stop`).

The app's lifespan starts them and keeps them as `app.state.services`; routes take them
through the `AppServices` dependency (api/deps.py), anything else with `services_of(app)`."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi.concurrency import run_in_threadpool

from api.background.evaluator import EngineEvaluator
from api.background.key_cache import KeyCache
from api.background.reaper import run_reaper
from api.background.webhook_dispatcher import WebhookDispatcher
from api.fine_tuning.jobs.event_stream import StreamSlots
from api.settings import Settings
from api.tenancy import bootstrap_keys
from api.tinker.answers import AnswerWatch
from serving.adapters import AdapterManager
from serving.engine import VLLMEngine
from serving.proxy import Proxy
from serving.remote import ReplicaDirectory
from storage.base_models import base_models
from storage.blob import BlobStore, open_blob_store
from storage.db import Database
from training.executors import TINKER_TRAINER, LocalExecutor, open_executor
from training.scheduler import Scheduler
from training.tinker.launch import TinkerTrainers

log = logging.getLogger("tuneserve.api")

Stop = Callable[[], Awaitable[None]]


class Parts:
    """The parts started so far, in start order. `stop` stops them newest first, so each
    stops before the parts it uses: the evaluator before the adapters it leases from, the
    engine after them, the database last."""

    def __init__(self) -> None:
        self._started: list[tuple[str, Stop]] = []

    def started(self, name: str, stop: Stop) -> None:
        self._started.append((name, stop))

    @property
    def names(self) -> list[str]:
        """The started parts' names, in start order."""
        return [name for name, _ in self._started]

    async def stop(self) -> None:
        while self._started:
            name, stop = self._started.pop()
            try:
                await stop()
            except Exception:
                # One part that fails to stop does not keep the ones before it running.
                log.exception("stopping the %s failed", name)


def _in_thread(stop: Callable[[], None]) -> Stop:
    """A stop that blocks (joins a thread): run off the event loop."""

    async def run() -> None:
        await run_in_threadpool(stop)

    return run


def _on_loop(stop: Callable[[], None]) -> Stop:
    async def run() -> None:
        stop()

    return run


def _cancelling(task: asyncio.Task[None]) -> Stop:
    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


@dataclass
class Serving:
    """What answers the inference routes on this node."""

    adapters: AdapterManager  # registrations, leases and routing of adapters on replicas
    proxy: Proxy  # forwards a leased request to its replica
    engine: VLLMEngine | None  # this node's own vLLM (TUNESERVE_SERVING=local), else None
    replicas: ReplicaDirectory | None  # the Ray replicas (TUNESERVE_SERVING=ray), else None
    evaluator: EngineEvaluator  # answers built-in evaluations on the bases served here


@dataclass
class Services:
    settings: Settings
    db: Database
    store: BlobStore
    keys: KeyCache  # API key -> project, with revocations heard at once
    scheduler: Scheduler  # starts, watches and fails over training jobs
    tinker_trainers: TinkerTrainers  # the Tinker API's trainer processes on this node
    tinker_answers: AnswerWatch  # wakes this node's long polls for Tinker answers
    webhooks: WebhookDispatcher  # delivers queued webhook events
    event_streams: StreamSlots  # the event streams open on this node, per project
    serving: Serving | None  # None: serving is turned off, or its base is not prepared
    parts: Parts = field(repr=False)

    async def stop(self) -> None:
        await self.parts.stop()


async def start_services(settings: Settings) -> Services:
    """Starts the parts in order; a start that fails stops the parts already started."""
    parts = Parts()
    try:
        return await _start(settings, parts)
    except BaseException:
        await parts.stop()
        raise


async def _start(settings: Settings, parts: Parts) -> Services:
    settings.prepare_data_dir()
    db = settings.open_database()
    parts.started("database", _on_loop(db.dispose))
    await run_in_threadpool(db.migrate)
    store = await run_in_threadpool(open_blob_store, settings)
    where_key = await run_in_threadpool(
        bootstrap_keys, db, settings.data_dir, settings.default_project,
        settings.bootstrap_api_key,
    )
    keys = KeyCache(db)
    keys.start()
    parts.started("key listener", _in_thread(keys.stop))
    parts.started("reaper", _cancelling(asyncio.create_task(run_reaper(db, store, settings))))
    executor = open_executor(settings)
    scheduler = Scheduler(settings, db, store, executor)
    scheduler.start()
    parts.started("scheduler", _in_thread(scheduler.stop))
    # Trainers fork from the jobs' launcher where jobs run locally: the same imports.
    launcher = executor.launcher if isinstance(executor, LocalExecutor) else None
    tinker_trainers = TinkerTrainers(
        settings, db, open_executor(settings, TINKER_TRAINER, launcher=launcher))
    parts.started("tinker trainers", _in_thread(tinker_trainers.close))
    tinker_answers = AnswerWatch(db)
    parts.started("tinker answer watch", tinker_answers.stop)
    webhooks = WebhookDispatcher(settings, db)
    webhooks.start()
    parts.started("webhook dispatcher", webhooks.stop)
    serving = await _start_serving(settings, db, store, parts)
    log.info("tuneserve listening on http://%s:%d (dashboard at /, API at /v1); %s",
             settings.host, settings.port, where_key)
    return Services(settings=settings, db=db, store=store, keys=keys, scheduler=scheduler,
                    tinker_trainers=tinker_trainers, tinker_answers=tinker_answers,
                    webhooks=webhooks,
                    event_streams=StreamSlots(settings.max_event_streams_per_project),
                    serving=serving, parts=parts)


async def _start_serving(settings: Settings, db: Database, store: BlobStore,
                         parts: Parts) -> Serving | None:
    if not settings.serving_enabled:
        return None
    engine: VLLMEngine | None = None
    if settings.serving != "ray":
        spec = base_models(settings).get(settings.served_model)
        if spec is None or not spec.prepared:
            log.warning("not serving: base model %r is not prepared (run `tuneserve models "
                        "prepare`)", settings.served_model)
            return None
        engine = VLLMEngine(settings, spec)
        await engine.start()
        parts.started("model engine", engine.stop)
    # With Ray, the replicas arrive (and go) later, as the directory hears them announce.
    adapters = AdapterManager(settings, db, store, [engine] if engine is not None else [])
    adapters.start()
    parts.started("adapter manager", adapters.close)
    replicas = None
    if settings.serving == "ray":
        replicas = ReplicaDirectory(settings, db, adapters)
        replicas.start()
        parts.started("replica directory", replicas.stop)
    proxy = Proxy()
    # Here, not at the top: the judge's module needs api.inference, which needs this one.
    from api.fine_tuning.alpha.graders.judge import serving_judge

    evaluator = EngineEvaluator(settings, db, store, adapters, proxy,
                                partial(serving_judge, settings, db, adapters, proxy))
    parts.started("evaluator", _cancelling(asyncio.create_task(evaluator.run())))
    return Serving(adapters=adapters, proxy=proxy, engine=engine, replicas=replicas,
                   evaluator=evaluator)


def services_of(app: Any) -> Services:
    """The services of a running app (its lifespan started them)."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app's services are not started: its lifespan has not run")
    return services
