"""The adapter lifecycle, with one owner: resolve a model name to the project's adapter, pick
the replica for the request (`serving.router`), fetch the adapter from the blob store into a
local disk cache, register it with that replica's vLLM, and lease it to the request until its
last byte.

Each adapter has an explicit state per replica (LoRAX's rule): nothing a request holds a lease
on is unloaded or evicted; a failed load is remembered for a while and fails fast; the disk
cache never deletes the files of an adapter a replica has registered (vLLM re-reads them when
its own CPU cache has dropped the weights, which is then transparent)."""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx

from serving.engine import EngineUnavailable, Replica, send_with_retry
from serving.engine_metrics import parse_engine_load
from serving.router import Action, ReplicaLoad, RoutingPolicy, choose_with
from serving.settings import ServingSettings
from storage.base_models import base_models
from storage.blob import BlobStore
from storage.db import Database
from storage.models import FineTunedModel
from storage.sharing import usable_model

log = logging.getLogger("tuneserve.adapters")


class ModelNotFound(LookupError):
    """No such model for this project (another project's model is not found either)."""


class ModelNotServed(LookupError):
    """A model of a base that no replica serves."""


class AdapterLoadError(RuntimeError):
    """The engine refused or failed to load an adapter (details are in the server's log)."""


def served_name(model_id: str) -> str:
    # Opaque, so tenants' model names never reach the engine or its logs.
    return "lora-" + hashlib.sha256(model_id.encode()).hexdigest()[:24]


class AdapterCache:
    """Adapters on local disk, least recently used evicted past `max_bytes`, except those
    `in_use` names (registered with an engine, which may read them again at any time)."""

    def __init__(self, root: Path, max_bytes: int, store: BlobStore,
                 in_use: Callable[[str], bool] = lambda name: False) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.store = store
        self.in_use = in_use
        self.root.mkdir(parents=True, exist_ok=True)
        self._used: OrderedDict[str, int] = OrderedDict()  # dir name -> bytes
        self._lock = threading.Lock()
        # For /metrics: lookups found on disk, fetches from the blob store and their time.
        self.hits = self.fetches = 0
        self.fetch_seconds = 0.0
        for entry in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if entry.is_dir() and not entry.name.startswith("."):
                self._used[entry.name] = sum(f.stat().st_size for f in entry.iterdir())
            elif entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)

    def path(self, name: str, prefix: str) -> Path:
        """The local copy of the adapter at blob `prefix`, fetched if missing."""
        target = self.root / name
        with self._lock:
            if name in self._used and target.is_dir():
                self._used.move_to_end(name)
                self.hits += 1
                return target
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.root))
        started = time.monotonic()
        try:
            files = self.store.download_prefix(prefix, tmp)
            if not any(f.name == "adapter_config.json" for f in files):
                raise ModelNotFound(f"adapter files missing under {prefix}")
            size = sum(f.stat().st_size for f in files)
            with self._lock:
                if not target.is_dir():
                    os.rename(tmp, target)
                self._used[name] = size
                self._used.move_to_end(name)
                self._evict(keep=name)
                self.fetches += 1
                self.fetch_seconds += time.monotonic() - started
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _evict(self, keep: str) -> None:
        total = sum(self._used.values())
        for name in list(self._used):
            if total <= self.max_bytes:
                return
            if name == keep or self.in_use(name):
                continue
            total -= self._used.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def drop(self, name: str) -> None:
        with self._lock:
            self._used.pop(name, None)
            shutil.rmtree(self.root / name, ignore_errors=True)


class AdapterState(Enum):
    LOADING = "loading"  # being fetched or registered; requests for it wait
    LOADED = "loaded"    # registered with the replica's current process


@dataclass
class Registration:
    """One adapter on one replica."""

    state: AdapterState
    generation: int
    leases: int = 0


@dataclass
class _Replica:
    engine: Replica
    # Adapters on it, least recently used first.
    adapters: OrderedDict[str, Registration] = field(default_factory=OrderedDict)
    # Requests routed to it and not finished, base model ones included.
    in_flight: int = 0
    # Its own figures (vLLM's /metrics), refreshed while several replicas share a base, and
    # the requests this API node routed to it since they were read.
    running: int = 0
    waiting: int = 0
    routed_since_read: int = 0


@dataclass
class Lease:
    """A request's hold on its model on one replica, from routing until its last byte."""

    requested: str
    served: str
    engine: Replica
    action: Action
    cache_salt: str
    prefix: str | None
    _replica: "_Replica"
    _registration: Registration | None
    _release: Callable[["Lease"], None]
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release(self)


@dataclass(frozen=True)
class _Target:
    base: str
    served: str
    prefix: str | None  # None: the base model itself


class AdapterManager:
    def __init__(self, settings: ServingSettings, db: Database, store: BlobStore,
                 engines: Sequence[Replica]) -> None:
        self.settings = settings
        self.db = db
        self.cache = AdapterCache(
            settings.adapter_cache_dir or settings.data_dir / "adapter-cache",
            settings.adapter_cache_bytes, store, in_use=self._registered_anywhere,
        )
        self.base_names = set(base_models(settings))
        self.deployed = set(settings.served_bases() or [])
        self.policy = RoutingPolicy(overload_waiting=settings.routing_overload_waiting)
        self._groups: dict[str, list[_Replica]] = {}
        for engine in engines:
            self.add_replica(engine)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # served name -> until when its load is not tried again, for loads that failed.
        self._failed: dict[str, float] = {}
        # What routing decided, and how loads went: the figures /metrics shows.
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.loads: Counter[str] = Counter()
        self.load_seconds = 0.0  # summed over successful loads
        self.evictions = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick = 0  # requests routed, for round robin

    @property
    def served_bases(self) -> list[str]:
        """The base models some replica serves now."""
        return [base for base, group in self._groups.items() if group]

    def add_replica(self, engine: Replica) -> None:
        self._groups.setdefault(engine.base, []).append(_Replica(engine))

    def remove_replica(self, engine: Replica) -> None:
        """A replica gone from the cluster: nothing is routed to it any more (requests on it
        end as its connections do)."""
        group = self._groups.get(engine.base, [])
        group[:] = [r for r in group if r.engine is not engine]

    def _registered_anywhere(self, name: str) -> bool:
        return any(name in r.adapters for group in self._groups.values() for r in group)

    def start(self) -> None:
        # Always: with Ray, the replicas arrive (and go) after this, as they beat.
        self._spawn(self._watch_loads())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _watch_loads(self) -> None:
        """Keeps each replica's own figures fresh while several share a base model: they see
        the requests of every API node, not only this one's."""
        while True:
            # Copies: replicas join and leave (other tasks) while a figure is awaited.
            for group in list(self._groups.values()):
                for replica in list(group) if len(group) > 1 else []:
                    if not replica.engine.ready.is_set():
                        continue
                    with contextlib.suppress(httpx.HTTPError, ValueError, IndexError):
                        answer = await replica.engine.http.get("/metrics", timeout=2)
                        load = parse_engine_load(answer.text)
                        replica.running, replica.waiting = load.running, load.waiting
                        replica.routed_since_read = 0
            await asyncio.sleep(self.settings.routing_metrics_interval)

    # -- routing ---------------------------------------------------------------------------

    async def acquire(self, project_id: str, model: str) -> Lease:
        """Resolves `model` for the project, picks its replica and makes sure that replica
        has it. The caller must `release()` the lease when the response is over."""
        target = await self._resolve(project_id, model)
        group = self._groups[target.base]
        if target.prefix is not None and self._failed.get(target.served, 0) > time.monotonic():
            raise AdapterLoadError("failed recently")
        ready = [r for r in group if r.engine.ready.is_set()]
        if not ready:
            await _first_ready([r.engine for r in group])
            ready = [r for r in group if r.engine.ready.is_set()]
        adapter = target.served if target.prefix is not None else None
        self._tick += 1
        decision = choose_with(self.settings.routing_policy, [self._view(r) for r in ready],
                               adapter, self._tick, self.policy)
        assert decision is not None  # `ready` is not empty
        replica = next(r for r in ready if r.engine.name == decision.replica)
        self.decisions[(target.base, decision.action)] += 1
        replica.in_flight += 1
        replica.routed_since_read += 1
        registration = None
        if target.prefix is not None:
            registration = self._hold(replica, target.served)
        lease = Lease(model, target.served, replica.engine, decision.action,
                      _salt(replica.engine.api_key, project_id), target.prefix, replica,
                      registration, self._release)
        try:
            if target.prefix is not None:
                await self._ensure_loaded(replica, target.served, target.prefix)
        except BaseException:
            lease.release()
            raise
        return lease

    def _view(self, replica: _Replica) -> ReplicaLoad:
        current = {name: reg for name, reg in replica.adapters.items()
                   if reg.generation == replica.engine.generation}
        # Its metrics see every API node's requests, a moment late: the requests this node
        # sent it since they were read (and still has in flight) are taken as waiting.
        waiting = replica.waiting + min(replica.routed_since_read, replica.in_flight)
        return ReplicaLoad(
            name=replica.engine.name, running=replica.running, waiting=waiting,
            adapters=frozenset(current), slots=self.settings.max_loaded_adapters,
            pinned=sum(1 for reg in current.values() if reg.leases))

    async def _resolve(self, project_id: str, model: str) -> _Target:
        if self._groups.get(model):
            return _Target(model, model, None)
        if model in self.base_names:
            raise self._unserved(model, model)
        row = await asyncio.to_thread(self._lookup, project_id, model)
        if row is None:
            raise ModelNotFound(model)
        if not self._groups.get(row.base_model):
            raise self._unserved(row.base_model, model)
        return _Target(row.base_model, served_name(row.id), row.adapter_prefix)

    def _unserved(self, base: str, model: str) -> Exception:
        """No replica serves `base` now: for a base this deployment serves, one is starting
        or restarting (a 503 to retry); for any other, the model is not served (a 400)."""
        if base in self.deployed:
            return EngineUnavailable()
        return ModelNotServed(model)

    def _lookup(self, project_id: str, model: str) -> FineTunedModel | None:
        with self.db.session() as s:
            return usable_model(s, project_id, model)

    # -- leases and registration -----------------------------------------------------------

    def _hold(self, replica: _Replica, name: str) -> Registration:
        registration = replica.adapters.get(name)
        if registration is None:
            registration = Registration(AdapterState.LOADING, replica.engine.generation)
            replica.adapters[name] = registration
        elif registration.generation != replica.engine.generation:
            # The replica restarted: loaded again, in place, so leases taken before still
            # release this same registration.
            registration.state = AdapterState.LOADING
            registration.generation = replica.engine.generation
        registration.leases += 1
        replica.adapters.move_to_end(name)
        return registration

    def _release(self, lease: Lease) -> None:
        replica = lease._replica
        replica.in_flight -= 1
        if lease._registration is None:
            return
        registration = lease._registration
        registration.leases -= 1
        if (registration.leases == 0 and registration.state is AdapterState.LOADING
                and replica.adapters.get(lease.served) is registration):
            # Its load failed or was cancelled, and no request waits on it any more: a
            # registration that never loaded must not take a slot or pin its files.
            del replica.adapters[lease.served]
        if len(replica.adapters) > self.settings.max_loaded_adapters:
            self._spawn(self._evict(replica))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def _ensure_loaded(self, replica: _Replica, name: str, prefix: str) -> None:
        engine = replica.engine
        if self._is_loaded(replica, name):
            return
        # One load per adapter and replica however many first requests arrive; other
        # models go on meanwhile.
        lock = self._locks.setdefault((engine.name, name), asyncio.Lock())
        async with lock:
            if self._is_loaded(replica, name):
                return
            if self._failed.get(name, 0) > time.monotonic():
                raise AdapterLoadError("failed recently")
            started = time.monotonic()
            if engine.fetches_adapters:  # from the blob store, on the replica's own node
                path = f"blob:{prefix}"
            else:
                path = str(await asyncio.to_thread(self.cache.path, name, prefix))
            await engine.wait_ready()
            generation = engine.generation
            request = engine.http.build_request("POST", "/v1/load_lora_adapter", json={
                "lora_name": name, "lora_path": path, "load_inplace": True})
            try:
                response = await send_with_retry(engine.http, request)
            except httpx.TransportError as exc:
                engine.mark_unreachable()
                raise EngineUnavailable from exc
            if response.status_code != 200:
                self.loads["failed"] += 1
                self._failed[name] = time.monotonic() + self.settings.adapter_failure_ttl_seconds
                log.error("replica %s could not load adapter %s: %s", engine.name, name,
                          response.text[:2000])
                raise AdapterLoadError(f"engine answered {response.status_code}")
            self.loads["loaded"] += 1
            self.load_seconds += time.monotonic() - started
            registration = replica.adapters.get(name)
            if registration is not None:
                registration.state, registration.generation = AdapterState.LOADED, generation
            log.info("loaded adapter %s on %s in %.3f s", name, engine.name,
                     time.monotonic() - started)
        await self._evict(replica)

    def _is_loaded(self, replica: _Replica, name: str) -> bool:
        registration = replica.adapters.get(name)
        return (registration is not None and registration.state is AdapterState.LOADED
                and registration.generation == replica.engine.generation)

    async def reload(self, lease: Lease) -> None:
        """The engine did not know an adapter it was routed (it restarted in between): loads
        it again while the lease still holds it, so the request can be sent once more."""
        replica, registration = lease._replica, lease._registration
        if lease.prefix is None or registration is None:
            return
        if replica.adapters.get(lease.served) is not registration:
            raise ModelNotFound(lease.requested)  # deleted meanwhile
        registration.state = AdapterState.LOADING
        await self._ensure_loaded(replica, lease.served, lease.prefix)

    async def _evict(self, replica: _Replica) -> None:
        """Unregisters the least recently used adapters past the configured count, never one
        that a request holds or that is still loading; with every one held, the replica goes
        over its count until requests finish."""
        while len(replica.adapters) > self.settings.max_loaded_adapters:
            victim = next((name for name, reg in replica.adapters.items()
                           if reg.leases == 0 and reg.state is AdapterState.LOADED), None)
            if victim is None:
                return
            registration = replica.adapters.pop(victim)
            self.evictions += 1
            if registration.generation == replica.engine.generation:
                await self._unload(replica.engine, victim)

    async def _unload(self, engine: Replica, name: str) -> None:
        # An engine that is down has forgotten it already.
        with contextlib.suppress(httpx.HTTPError):
            await engine.http.post("/v1/unload_lora_adapter", json={"lora_name": name})

    async def forget(self, model_id: str) -> None:
        """A deleted model: unregistered from every replica and dropped from the disk cache
        (requests already generating with it finish)."""
        name = served_name(model_id)
        self._failed.pop(name, None)
        for group in list(self._groups.values()):
            for replica in list(group):
                registration = replica.adapters.pop(name, None)
                if registration and registration.generation == replica.engine.generation:
                    await self._unload(replica.engine, name)
        await asyncio.to_thread(self.cache.drop, name)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_coro(), exc_info=task.exception())


async def _first_ready(engines: Sequence[Replica]) -> None:
    """Waits (bounded, as each engine's own wait is) until one of them is ready."""
    waits = [asyncio.ensure_future(e.wait_ready()) for e in engines]
    try:
        for next_done in asyncio.as_completed(waits):
            with contextlib.suppress(EngineUnavailable):
                await next_done
                return
        raise EngineUnavailable
    finally:
        for wait in waits:
            wait.cancel()


def _salt(replica_key: str, project_id: str) -> str:
    """The project's prefix-cache salt on one replica: projects never share cached prefixes
    (no timing probe of another tenant's prompts), and the salt is unguessable to tenants."""
    return hmac.new(replica_key.encode(), project_id.encode(), "sha256").hexdigest()
