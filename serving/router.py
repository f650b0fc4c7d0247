"""Which replica a request goes to: a pure function of what the replicas report, so the same
code decides in the API and in the routing simulator (`bench/route_sim.py`).

The rule is the one every multi-LoRA router publishes (llm-d's lora-affinity scorer, Ray Serve
multiplexing): a replica that already holds the adapter, unless it is overloaded; then one with
a free adapter slot; then the least loaded. What they lack, and this adds, is the spill: when
every holder of a hot adapter is overloaded, the adapter is loaded on one more replica, and from
then on its requests spread over all its holders."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# hit: the replica holds the adapter. load: no replica held it. spill: holders were overloaded,
# so one more replica loads it. base: a request for the base model (no adapter).
Action = Literal["hit", "load", "spill", "base"]


@dataclass(frozen=True)
class ReplicaLoad:
    """One replica as the router sees it."""

    name: str
    # Requests generating and queued on the replica.
    running: int
    waiting: int
    # Adapters registered on the replica, and how many it may hold before one must go.
    adapters: frozenset[str]
    slots: int
    # Adapters on it that requests still use: they cannot make room for another.
    pinned: int = 0

    @property
    def load(self) -> int:
        return self.running + self.waiting

    @property
    def has_free_slot(self) -> bool:
        return len(self.adapters) < self.slots

    @property
    def can_make_room(self) -> bool:
        return self.has_free_slot or self.pinned < len(self.adapters)


@dataclass(frozen=True)
class RoutingPolicy:
    # A holder with more requests waiting than this is overloaded: the next request for the
    # adapter loads it on another replica instead (where one has room).
    overload_waiting: int = 4


@dataclass(frozen=True)
class Decision:
    replica: str
    action: Action


def _least_loaded(replicas: Sequence[ReplicaLoad]) -> ReplicaLoad:
    # Ties go to the replica holding fewer adapters (more room), then by name, so the choice is
    # the same in every API process that sees the same figures.
    return min(replicas, key=lambda r: (r.load, len(r.adapters), r.name))


def choose(replicas: Sequence[ReplicaLoad], adapter: str | None,
           policy: RoutingPolicy = RoutingPolicy()) -> Decision | None:
    """The replica for one request for `adapter` (None: the base model); None when there is no
    replica at all."""
    if not replicas:
        return None
    if adapter is None:
        return Decision(_least_loaded(replicas).name, "base")
    holders = [r for r in replicas if adapter in r.adapters]
    ready = [r for r in holders if r.waiting <= policy.overload_waiting]
    if ready:
        return Decision(_least_loaded(ready).name, "hit")
    others = [r for r in replicas if adapter not in r.adapters]
    miss: Action = "spill" if holders else "load"
    with_room = [r for r in others if r.has_free_slot]
    if with_room:
        return Decision(_least_loaded(with_room).name, miss)
    # No free slot anywhere: an overloaded holder still beats evicting a warm adapter
    # elsewhere, unless it is busier than a replica that can make room.
    evictable = [r for r in others if r.can_make_room]
    if holders:
        best_holder = _least_loaded(holders)
        if not evictable or best_holder.load <= _least_loaded(evictable).load:
            return Decision(best_holder.name, "hit")
    if evictable:
        return Decision(_least_loaded(evictable).name, miss)
    # Every slot everywhere is in use by a request: queue on the least loaded; the adapter
    # manager lets it go over its slot count rather than drop a request in flight.
    return Decision(_least_loaded(replicas).name, miss)


# The policies the affinity router is measured against (bench/route.py, bench/route_sim.py);
# an operator may pick one too (TUNESERVE_ROUTING_POLICY).
Policy = Literal["affinity", "round_robin", "least_loaded", "adapter_hash"]


def choose_with(policy: Policy, replicas: Sequence[ReplicaLoad], adapter: str | None,
                tick: int, settings: RoutingPolicy = RoutingPolicy()) -> Decision | None:
    """`choose` for `affinity`; the baselines otherwise. `tick` counts requests (round robin
    is the only one that needs it)."""
    if policy == "affinity":
        return choose(replicas, adapter, settings)
    if not replicas:
        return None
    ordered = sorted(replicas, key=lambda r: r.name)
    if policy == "round_robin":
        picked = ordered[tick % len(ordered)]
    elif policy == "least_loaded":
        picked = _least_loaded(ordered)
    else:  # rendezvous hashing: each adapter has one home while the replica set is the same
        key = adapter or ""
        picked = max(ordered, key=lambda r: hashlib.blake2b(
            f"{key}\0{r.name}".encode(), digest_size=8).digest())
    if adapter is None:
        return Decision(picked.name, "base")
    return Decision(picked.name, "hit" if adapter in picked.adapters else "load")
