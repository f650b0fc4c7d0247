"""Serving a project's model: resolve its name to the project's adapter, pick the replica for
the request (`serving.router`), make sure that replica has the adapter, and lease it to the
request until its last byte. `AdapterManager` is the one entry point; it is split by concern:

- `serving/adapter_cache.py`: the adapters' files on local disk, fetched from the blob store;
- `serving/adapter_registry.py`: per replica, each adapter's state (one enum, one table, one
  setter), the leases on it, eviction, and loading through vLLM; its docstring also holds
  the rule for who owns a shared replica's adapters when several API nodes route to it;
- `serving/load_watcher.py`: the replicas' own load figures, which routing weighs;
- `serving/router.py`: the routing decision, a pure function of those figures."""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from serving.adapter_cache import AdapterCache
from serving.adapter_errors import AdapterLoadError, ModelNotFound, ModelNotServed
from serving.adapter_registry import AdapterRegistry, Lease, ReplicaAdapters
from serving.engine import EngineUnavailable, Replica
from serving.load_watcher import watch_loads
from serving.router import (
    TIER_NAMES,
    ConsistentRouter,
    Decision,
    ReplicaLoad,
    RoutingPolicy,
    choose_with,
)
from serving.settings import ServingSettings
from storage.base_models import base_models
from storage.blob import BlobStore
from storage.db import Database
from storage.models import FineTunedModel, TinkerCheckpoint
from storage.sharing import usable_model, usable_sampler_weights

__all__ = ["AdapterLoadError", "AdapterManager", "Lease", "ModelNotFound", "ModelNotServed",
           "served_name"]

log = logging.getLogger("tuneserve.adapters")


# A Tinker run's saved weights are named by path (`tinker://...`), never an `ft:` id.
TINKER_SCHEME = "tinker://"


def served_name(model_id: str) -> str:
    # Opaque, so tenants' model names never reach the engine or its logs.
    return "lora-" + hashlib.sha256(model_id.encode()).hexdigest()[:24]


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
        self.registry = AdapterRegistry(settings, self.cache, self._spawn)
        self.base_names = set(base_models(settings))
        self.deployed = set(settings.served_bases() or [])
        self.policy = RoutingPolicy(overload_waiting=settings.routing_overload_waiting)
        # Keeps the adapters' demand and a hash ring per replica set (policy `consistent`).
        self.router = ConsistentRouter()
        for engine in engines:
            self.add_replica(engine)
        # What routing decided, by base, action and the tier the adapter was in on the chosen
        # replica: the figures /metrics shows (with the registry's).
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        # The consistent router loads an adapter's new homes ahead of its requests.
        self._prefetching = settings.routing_policy == "consistent"
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick = 0  # requests routed, for round robin

    # -- what /metrics reads ---------------------------------------------------------------

    @property
    def loads(self) -> Counter[str]:
        return self.registry.loads

    @property
    def load_seconds(self) -> float:
        return self.registry.load_seconds

    @property
    def evictions(self) -> int:
        return self.registry.evictions

    @property
    def prefetches(self) -> int:
        return self.registry.prefetches

    # -- replicas and lifecycle ------------------------------------------------------------

    @property
    def served_bases(self) -> list[str]:
        """The base models some replica serves now."""
        return [base for base, group in self.registry.groups.items() if group]

    def add_replica(self, engine: Replica) -> None:
        self.registry.add_replica(engine)

    def remove_replica(self, engine: Replica) -> None:
        """A replica gone from the cluster: nothing is routed to it any more (requests on it
        end as its connections do)."""
        self.registry.remove_replica(engine)

    def _registered_anywhere(self, name: str) -> bool:
        return self.registry.registered_anywhere(name)

    def start(self) -> None:
        # Always: with Ray, the replicas arrive (and go) after this, as they beat.
        self._spawn(watch_loads(self.registry.groups, self.settings.routing_metrics_interval))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    # -- routing ---------------------------------------------------------------------------

    async def acquire(self, project_id: str, model: str) -> Lease:
        """Resolves `model` for the project, picks its replica and makes sure that replica
        has it. The caller must `release()` the lease when the response is over."""
        target = await self._resolve(project_id, model)
        group = self.registry.groups[target.base]
        if target.prefix is not None and self.registry.failed_recently(target.base,
                                                                       target.served):
            raise AdapterLoadError("failed recently")
        ready = [r for r in group if r.engine.ready.is_set()]
        if not ready:
            await _first_ready([r.engine for r in group])
            ready = [r for r in group if r.engine.ready.is_set()]
        adapter = target.served if target.prefix is not None else None
        views = [self._view(r) for r in ready]
        decision = self._choose(views, adapter)
        replica = next(r for r in ready if r.engine.name == decision.replica)
        view = next(v for v in views if v.name == decision.replica)
        tier = "none" if adapter is None else TIER_NAMES[view.tier(adapter)]
        self.decisions[(target.base, decision.action, tier)] += 1
        if target.prefix is not None and self._prefetching:
            for name in self.router.prefetch(views, target.served):
                home = next(r for r in ready if r.engine.name == name)
                self._spawn(self.registry.prefetch(home, target.served, target.prefix))
        replica.in_flight += 1
        replica.routed_since_read += 1
        registration = None
        if target.prefix is not None:
            registration = self.registry.hold(replica, target.served)
        lease = Lease(model, target.served, replica.engine, decision.action,
                      _salt(replica.engine.api_key, project_id), target.prefix, replica,
                      registration, self.registry.release)
        try:
            if target.prefix is not None:
                await self.registry.ensure_loaded(replica, target.served, target.prefix)
        except BaseException:
            lease.release()
            raise
        return lease

    async def reload(self, lease: Lease) -> None:
        """The replica answered 404 for the lease's adapter: loaded again (see
        `AdapterRegistry.reload`)."""
        await self.registry.reload(lease)

    async def forget(self, model_id: str) -> None:
        """A deleted model: unregistered from every replica and dropped from the disk cache
        (requests already generating with it finish)."""
        name = served_name(model_id)
        await self.registry.forget(name)
        await asyncio.to_thread(self.cache.drop, name)

    def _choose(self, replicas: list[ReplicaLoad], adapter: str | None) -> Decision:
        self._tick += 1
        if self.settings.routing_policy == "consistent":
            decision = self.router.choose(replicas, adapter, time.monotonic())
        else:
            decision = choose_with(self.settings.routing_policy, replicas, adapter,
                                   self._tick, self.policy)
        assert decision is not None  # `replicas` is not empty
        return decision

    def _view(self, replica: ReplicaAdapters) -> ReplicaLoad:
        current = self.registry.current(replica)
        # Its metrics see every API node's requests, a moment late: the requests this node
        # sent it since they were read (and still has in flight) are taken as waiting.
        waiting = replica.waiting + min(replica.routed_since_read, replica.in_flight)
        # The tiers: what is registered is in vLLM's CPU LoRA cache (host memory,
        # `max_cpu_loras`): what this node registered, and on a cluster replica what it
        # announced (other API nodes' too); of this node's, the most recently used
        # `max_loras` are taken as in GPU slots (vLLM fills them least recently used first,
        # as requests ask).
        registered = list(current)
        engine = replica.engine
        return ReplicaLoad(
            name=engine.name, running=replica.running, waiting=waiting,
            adapters=frozenset(registered) | engine.announced,
            slots=self.settings.max_loaded_adapters,
            pinned=sum(1 for reg in current.values() if reg.leases),
            gpu=frozenset(registered[-self.settings.max_loras:]),
            disk=engine.disk if engine.fetches_adapters else self.cache.names)

    async def _resolve(self, project_id: str, model: str) -> _Target:
        groups = self.registry.groups
        if groups.get(model):
            return _Target(model, model, None)
        if model in self.base_names:
            raise self._unserved(model, model)
        if model.startswith(TINKER_SCHEME):
            return await self._resolve_tinker(project_id, model)
        row = await asyncio.to_thread(self._lookup, project_id, model)
        if row is None:
            raise ModelNotFound(model)
        if not groups.get(row.base_model):
            raise self._unserved(row.base_model, model)
        return _Target(row.base_model, served_name(row.id), row.adapter_prefix)

    async def _resolve_tinker(self, project_id: str, path: str) -> _Target:
        """A Tinker run's sampler weights (`tinker://{run}/sampler_weights/{name}`): an adapter
        like a job's, named for serving by its checkpoint's id."""

        def lookup() -> TinkerCheckpoint | None:
            with self.db.session() as s:
                return usable_sampler_weights(s, project_id, path)

        row = await asyncio.to_thread(lookup)
        if row is None:
            raise ModelNotFound(path)
        if not self.registry.groups.get(row.base_model):
            raise self._unserved(row.base_model, path)
        return _Target(row.base_model, served_name(row.id), row.blob_prefix)

    def _unserved(self, base: str, model: str) -> Exception:
        """No replica serves `base` now: for a base this deployment serves, one is starting
        or restarting (a 503 to retry); for any other, the model is not served (a 400)."""
        if base in self.deployed:
            return EngineUnavailable()
        return ModelNotServed(model)

    def _lookup(self, project_id: str, model: str) -> FineTunedModel | None:
        with self.db.session() as s:
            return usable_model(s, project_id, model)


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
