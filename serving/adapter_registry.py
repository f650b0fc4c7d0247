"""Which adapters are on which replica, as this API node knows it: per replica, one
registration per adapter, its state, and the leases requests hold on it; eviction past the
slot count; loading and unloading through the replica's vLLM.

An adapter's state on one replica, in the shape every machine here has (`storage/states.py`)
and LoRAX's (router/src/queue.rs: one status enum, one setter):

    loading --vLLM took it--> loaded --the replica restarted / it answered 404--> loading
       |  \\--vLLM refused it--> failed --its time passed, asked for again--> loading
       \\--no request waits for it any more (its load was cut short)--> unloaded
    loaded, failed --evicted / the model deleted--> unloaded

`_set_state` is the only writer of a registration's state. Nothing a request holds a lease
on is unloaded or evicted; a failed registration takes no slot and makes requests for the
adapter fail fast until `adapter_failure_ttl_seconds` pass; an unloaded one has left the
replica's table (a later request makes a new one).

Who owns a shared replica's adapters (`TUNESERVE_SERVING=ray`): every API node runs its own
`AdapterManager`, with its own registry, over the same replicas. Each node keeps its own
least-recently-used order and its own leases, and evicts by its own count; it cannot see
another node's leases, so it may unload an adapter another node's request is about to use
(never one its own requests hold). The replica's vLLM is the truth, and a node's registry
is a cache of it. The repair is in the send path (`serving/send.py`): a replica that answers
404 for an adapter the node thinks loaded (it restarted, or another node evicted the
adapter) gets it loaded again under the request's lease (`reload`), and the request is sent
once more. The replica's own middleware (`serving/node_adapters.py`) keeps the files of
whatever any node last registered there. `tests/test_adapter_lifecycle.py` holds the rule
(`test_an_adapter_another_node_evicted_is_reloaded_on_404`)."""

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from serving.adapter_cache import AdapterCache
from serving.adapter_errors import AdapterLoadError, ModelNotFound
from serving.engine import EngineUnavailable, Replica, send_with_retry
from serving.router import Action
from serving.settings import ServingSettings
from storage import states

log = logging.getLogger("tuneserve.adapters")


class AdapterState(StrEnum):
    LOADING = "loading"    # being fetched or registered; requests for it wait
    LOADED = "loaded"      # registered with the replica's current process
    FAILED = "failed"      # the replica refused it; requests fail fast until `retry_at`
    UNLOADED = "unloaded"  # gone from the replica's table


A = AdapterState
TRANSITIONS: dict[AdapterState, frozenset[AdapterState]] = {
    A.LOADING: frozenset({A.LOADED, A.FAILED, A.UNLOADED}),
    A.LOADED: frozenset({A.LOADING, A.UNLOADED}),
    A.FAILED: frozenset({A.LOADING, A.UNLOADED}),
    A.UNLOADED: frozenset(),
}
del A
# In the replica's vLLM, or on its way there: its files must stay, and it takes a slot.
REGISTERED = (AdapterState.LOADING, AdapterState.LOADED)


@dataclass
class Registration:
    """One adapter on one replica."""

    state: AdapterState
    generation: int  # the replica process it was loaded into
    leases: int = 0
    retry_at: float = 0.0  # when failed: when a load is tried again (time.monotonic)


@dataclass
class ReplicaAdapters:
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

    def slots_used(self) -> int:
        return sum(1 for reg in self.adapters.values() if reg.state in REGISTERED)


@dataclass
class Lease:
    """A request's hold on its model on one replica, from routing until its last byte."""

    requested: str
    served: str
    engine: Replica
    action: Action
    cache_salt: str
    prefix: str | None
    _replica: ReplicaAdapters
    _registration: Registration | None
    _release: Callable[["Lease"], None]
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release(self)


class AdapterRegistry:
    """This node's registrations on every replica it routes to."""

    def __init__(self, settings: ServingSettings, cache: AdapterCache,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.settings = settings
        self.cache = cache
        self._spawn = spawn  # runs an eviction in the background
        self.groups: dict[str, list[ReplicaAdapters]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # How loads went, for /metrics.
        self.loads: Counter[str] = Counter()
        self.load_seconds = 0.0  # summed over successful loads
        self.evictions = 0
        self.prefetches = 0  # loads ahead of any request, succeeded

    def add_replica(self, engine: Replica) -> None:
        self.groups.setdefault(engine.base, []).append(ReplicaAdapters(engine))

    def remove_replica(self, engine: Replica) -> None:
        group = self.groups.get(engine.base, [])
        group[:] = [r for r in group if r.engine is not engine]

    def registered_anywhere(self, name: str) -> bool:
        return any(name in r.adapters and r.adapters[name].state in REGISTERED
                   for group in self.groups.values() for r in group)

    def failed_recently(self, base: str, name: str) -> bool:
        now = time.monotonic()
        return any((reg := r.adapters.get(name)) is not None
                   and reg.state is AdapterState.FAILED and reg.retry_at > now
                   for r in self.groups.get(base, []))

    def current(self, replica: ReplicaAdapters) -> dict[str, Registration]:
        """The adapters on the replica's current process, or on their way there."""
        return {name: reg for name, reg in replica.adapters.items()
                if reg.state in REGISTERED and reg.generation == replica.engine.generation}

    # -- the one writer --------------------------------------------------------------------

    def _set_state(self, registration: Registration, state: AdapterState, *,
                   generation: int | None = None, retry_at: float = 0.0) -> None:
        states.check_transition(TRANSITIONS, [registration.state], state)
        registration.state = state
        registration.retry_at = retry_at
        if generation is not None:
            registration.generation = generation

    def _drop(self, replica: ReplicaAdapters, name: str) -> Registration | None:
        registration = replica.adapters.pop(name, None)
        if registration is not None:
            self._set_state(registration, AdapterState.UNLOADED)
        return registration

    # -- leases ----------------------------------------------------------------------------

    def hold(self, replica: ReplicaAdapters, name: str) -> Registration:
        registration = replica.adapters.get(name)
        generation = replica.engine.generation
        if registration is None:
            registration = Registration(AdapterState.LOADING, generation)
            replica.adapters[name] = registration
        elif (registration.state is AdapterState.FAILED
              and registration.retry_at <= time.monotonic()):
            self._set_state(registration, AdapterState.LOADING, generation=generation)
        elif registration.generation != generation:
            # The replica restarted: loaded again, in place, so leases taken before still
            # release this same registration.
            if registration.state is AdapterState.LOADED:
                self._set_state(registration, AdapterState.LOADING)
            registration.generation = generation
        registration.leases += 1
        replica.adapters.move_to_end(name)
        return registration

    def release(self, lease: Lease) -> None:
        replica = lease._replica
        replica.in_flight -= 1
        if lease._registration is not None:
            self._unhold(replica, lease.served, lease._registration)

    def _unhold(self, replica: ReplicaAdapters, name: str, registration: Registration) -> None:
        registration.leases -= 1
        if (registration.leases == 0 and registration.state is AdapterState.LOADING
                and replica.adapters.get(name) is registration):
            # Its load was cut short, and no request waits on it any more: a registration
            # that never loaded must not take a slot or pin its files.
            self._drop(replica, name)
        if replica.slots_used() > self.settings.max_loaded_adapters:
            self._spawn(self.evict(replica))

    # -- loading ---------------------------------------------------------------------------

    def is_loaded(self, replica: ReplicaAdapters, name: str) -> bool:
        registration = replica.adapters.get(name)
        return (registration is not None and registration.state is AdapterState.LOADED
                and registration.generation == replica.engine.generation)

    async def ensure_loaded(self, replica: ReplicaAdapters, name: str, prefix: str,
                            trust_announced: bool = True) -> None:
        """Registers `name` with the replica's vLLM unless this node did already, or (with
        `trust_announced`) the replica announced it registered by another API node."""
        engine = replica.engine
        if self.is_loaded(replica, name):
            return
        # One load per adapter and replica however many first requests arrive; other
        # models go on meanwhile.
        lock = self._locks.setdefault((engine.name, name), asyncio.Lock())
        async with lock:
            if self.is_loaded(replica, name):
                return
            registration = replica.adapters.get(name)
            if registration is not None and registration.state is AdapterState.FAILED:
                raise AdapterLoadError("failed recently")
            if trust_announced and name in engine.announced:
                # In its host memory already: a load would read it from disk again. Should
                # the other node have unloaded it since, the 404 is answered by `reload`.
                if registration is not None and registration.state is AdapterState.LOADING:
                    self._set_state(registration, AdapterState.LOADED,
                                    generation=engine.generation)
                return
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
            # Forgotten meanwhile (the model was deleted): nothing to remember it by.
            registration = replica.adapters.get(name)
            loading = registration is not None and registration.state is AdapterState.LOADING
            if response.status_code != 200:
                self.loads["failed"] += 1
                if registration is not None and loading:
                    self._set_state(registration, AdapterState.FAILED, retry_at=time.monotonic()
                                    + self.settings.adapter_failure_ttl_seconds)
                log.error("replica %s could not load adapter %s: %s", engine.name, name,
                          response.text[:2000])
                raise AdapterLoadError(f"engine answered {response.status_code}")
            self.loads["loaded"] += 1
            self.load_seconds += time.monotonic() - started
            if registration is not None and loading:
                self._set_state(registration, AdapterState.LOADED, generation=generation)
            log.info("loaded adapter %s on %s in %.3f s", name, engine.name,
                     time.monotonic() - started)
        await self.evict(replica)

    async def prefetch(self, replica: ReplicaAdapters, name: str, prefix: str) -> None:
        """Loads `name` into the replica ahead of any request for it (into vLLM's CPU LoRA
        cache: host memory). Held while it loads, as a request would hold it. A failure is
        logged and forgotten unless a request shares it: the adapter serves elsewhere, and a
        prefetch must not make its requests fail fast (`failed_recently`)."""
        if name in self.current(replica):
            return
        registration = self.hold(replica, name)
        try:
            await self.ensure_loaded(replica, name, prefix)
            self.prefetches += 1
        except (AdapterLoadError, EngineUnavailable) as exc:
            log.warning("prefetching adapter %s to %s failed: %r", name, replica.engine.name,
                        exc)
            if registration.leases == 1 and replica.adapters.get(name) is registration:
                self._drop(replica, name)
        finally:
            self._unhold(replica, name, registration)

    async def reload(self, lease: Lease) -> None:
        """The replica did not know an adapter it was routed (it restarted, or another API
        node evicted it): loads it again while the lease still holds it, so the request can
        be sent once more."""
        replica, registration = lease._replica, lease._registration
        if lease.prefix is None or registration is None:
            return
        if replica.adapters.get(lease.served) is not registration:
            raise ModelNotFound(lease.requested)  # deleted meanwhile
        if registration.state is AdapterState.LOADED:
            self._set_state(registration, AdapterState.LOADING)
        await self.ensure_loaded(replica, lease.served, lease.prefix, trust_announced=False)

    # -- making room -----------------------------------------------------------------------

    async def evict(self, replica: ReplicaAdapters) -> None:
        """Forgets failures whose time has passed, then unregisters the least recently used
        adapters past the configured count, never one that a request holds or that is still
        loading; with every one held, the replica goes over its count until requests
        finish."""
        now = time.monotonic()
        for name, reg in list(replica.adapters.items()):
            if reg.state is AdapterState.FAILED and reg.leases == 0 and reg.retry_at <= now:
                self._drop(replica, name)
        while replica.slots_used() > self.settings.max_loaded_adapters:
            victim = next((name for name, reg in replica.adapters.items()
                           if reg.leases == 0 and reg.state is AdapterState.LOADED), None)
            if victim is None:
                return
            registration = self._drop(replica, victim)
            self.evictions += 1
            if registration is not None and registration.generation == replica.engine.generation:
                await _unload(replica.engine, victim)

    async def forget(self, name: str) -> None:
        """A deleted model: unregistered from every replica (requests already generating
        with it finish)."""
        for group in list(self.groups.values()):
            for replica in list(group):
                registration = replica.adapters.get(name)
                was_registered = registration is not None and registration.state in REGISTERED
                registration = self._drop(replica, name)
                if (registration is not None and was_registered
                        and registration.generation == replica.engine.generation):
                    await _unload(replica.engine, name)


async def _unload(engine: Replica, name: str) -> None:
    # An engine that is down has forgotten it already.
    with contextlib.suppress(httpx.HTTPError):
        await engine.http.post("/v1/unload_lora_adapter", json={"lora_name": name})
