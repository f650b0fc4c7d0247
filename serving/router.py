"""Which replica a request goes to: a pure function of what the replicas report, so the same
code decides in the API and in the routing simulator (`bench/route_sim.py`).

Two rules. `choose` (policy `affinity`) is the one every multi-LoRA router publishes (llm-d's
lora-affinity scorer, Ray Serve multiplexing): a replica that already holds the adapter,
unless it is overloaded; then one with a free adapter slot; then the least loaded; when every
holder of a hot adapter is overloaded, the adapter is loaded on one more replica (a spill).
`ConsistentRouter` (policy `consistent`, see the comment above it) gives every adapter homes
on a hash ring, as many as its demand needs, and bounds every replica's load; the simulator
measures both against round robin, least loaded and plain hashing."""

import bisect
import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

# Where an adapter is on one replica, fastest first: in a GPU slot (vLLM's `--max-loras`), in
# host memory (vLLM's CPU LoRA cache, `--max-cpu-loras`: a copy to the GPU away), on the node's
# disk cache (a load from local disk away), or only in the blob store (a fetch, then a load).
TIER_GPU, TIER_HOST, TIER_DISK, TIER_COLD = 0, 1, 2, 3
TIER_NAMES = ("gpu", "host", "disk", "cold")

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
    # Of `adapters`, those in GPU slots (vLLM's `--max-loras`, the most recently used); the
    # rest are in host memory (vLLM's CPU LoRA cache), a copy away.
    gpu: frozenset[str] = frozenset()
    # Adapters in the replica's node's disk cache (registered or not): loading one of these
    # skips the fetch from the blob store.
    disk: frozenset[str] = frozenset()

    @property
    def load(self) -> int:
        return self.running + self.waiting

    @property
    def has_free_slot(self) -> bool:
        return len(self.adapters) < self.slots

    @property
    def can_make_room(self) -> bool:
        return self.has_free_slot or self.pinned < len(self.adapters)

    def tier(self, adapter: str) -> int:
        if adapter in self.gpu:
            return TIER_GPU
        if adapter in self.adapters:
            return TIER_HOST
        return TIER_DISK if adapter in self.disk else TIER_COLD


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
# `consistent` is the consistent-hashing router below (`ConsistentRouter`: it keeps state).
Policy = Literal["consistent", "affinity", "round_robin", "least_loaded", "adapter_hash"]


def choose_with(policy: Policy, replicas: Sequence[ReplicaLoad], adapter: str | None,
                tick: int, settings: RoutingPolicy = RoutingPolicy()) -> Decision | None:
    """`choose` for `affinity`; the baselines otherwise. `tick` counts requests (round robin
    is the only one that needs it). `consistent` keeps state: `ConsistentRouter.choose`."""
    if policy == "consistent":
        raise ValueError("the consistent router keeps state: use ConsistentRouter.choose")
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


# -- consistent hashing with bounded loads -------------------------------------------------
#
# Today's rule above keeps an adapter where it happens to be; it has no notion of where an
# adapter belongs, so nothing can be prefetched and a replica that joins or leaves reshuffles
# whatever the loads say. The rule below gives every adapter a home: its place on a hash ring
# of the replicas (virtual nodes smooth the shares), the first k distinct replicas clockwise
# from its hash, k growing with its demand (a hot adapter is replicated in proportion to its
# traffic). Among its homes, and any other replica still holding it (live affinity), the
# request goes to the one with the lowest queue plus the cost of the tier the adapter is in
# there; a replica past c times the average load takes nothing (bounded loads, Mirrokni,
# Thorup and Zadimoghaddam 2018, as HAProxy's `hash-balance-factor` and Vimeo's edge use it),
# and when every home is past it the walk goes on clockwise to the first replica under it, so
# an overflow lands on the same next replica each time. An adapter no replica holds is loaded
# wherever it goes, so it goes to the less loaded of its first two homes, and stays there
# while held: hashing alone places hot adapters together on a small fleet. A replica joining
# or leaving moves only the adapters whose arc it takes or gives: about 1/N of them.

class ReplicaState(Protocol):
    """What the consistent router reads of one replica (`ReplicaLoad` is one; the simulator's
    replicas are others)."""

    @property
    def name(self) -> str: ...

    @property
    def load(self) -> int: ...

    def tier(self, adapter: str) -> int: ...


@dataclass(frozen=True)
class HashingPolicy:
    # Points each replica has on the ring: more smooth the share of adapters each one is home
    # to (with 100 the largest share is within ~20 % of the mean).
    vnodes: int = 100
    # c in "no replica takes more than c times the average load": closer to 1 balances
    # better and keeps an adapter on its home less often.
    load_factor: float = 1.5
    # A replica with fewer requests than this is never full, whatever the average: it batches
    # them together, and spreading an idle fleet's first requests would only cost loads.
    min_capacity: int = 4
    # An adapter gets one more home for every this much of one replica's share of traffic it
    # draws: at 0.5, one with 10 % of the requests of 100 replicas has 20 homes.
    replica_share: float = 0.5
    # What the tier the adapter is in costs, in requests queued (GPU, host, disk, blob store):
    # a copy from host memory is almost free, a load from local disk costs about one request
    # (0.1 s for an 8B adapter), a fetch from the blob store ten times that.
    tier_penalty: tuple[float, float, float, float] = (0.0, 0.5, 1.0, 8.0)
    # An adapter no replica holds is loaded wherever it goes: it goes to the least loaded of
    # its first this many homes (the power of two choices; one with it on disk counts as a
    # disk load's penalty less loaded), and stays there while it is held.
    # Without it a small fleet's hash places hot adapters together: on two real replicas its
    # p95 time to first token was 1.69x round robin's (docs/benchmarks-and-routing.md).
    cold_choices: int = 2


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Replicas on a ring of 64-bit hashes, `vnodes` points each."""

    def __init__(self, names: Iterable[str], vnodes: int = HashingPolicy.vnodes) -> None:
        self.names = frozenset(names)
        points = sorted((_point(f"{name}#{i}"), name) for name in self.names
                        for i in range(vnodes))
        self._points = [p for p, _ in points]
        self._owners = [n for _, n in points]

    def walk(self, key: str) -> Iterator[str]:
        """Every replica once, clockwise from `key`'s hash: its homes first."""
        if not self._points:
            return
        start = bisect.bisect(self._points, _point(key))
        seen: set[str] = set()
        size = len(self._points)
        for i in range(size):
            owner = self._owners[(start + i) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self.names):
                    return

    def homes(self, key: str, k: int = 1) -> list[str]:
        """`key`'s first `k` replicas."""
        return list(itertools.islice(self.walk(key), k))


def home_count(share: float, replicas: int, policy: HashingPolicy = HashingPolicy()) -> int:
    """How many homes an adapter drawing `share` of the requests gets (at least one, at most
    every replica)."""
    return max(1, min(replicas, math.ceil(share * replicas / policy.replica_share)))


class DemandTracker:
    """Each adapter's share of recent requests, exponentially decayed (`half_life_s`), so a
    tenant that goes quiet loses its extra homes. Shares stay small until `floor` requests
    are seen (one request at start-up is not 100 % of the demand)."""

    def __init__(self, half_life_s: float = 30.0, floor: float = 256.0,
                 limit: int = 200_000) -> None:
        self.half_life_s = half_life_s
        self.floor = floor
        self.limit = limit
        self._counts: dict[str, float] = {}
        self._total = 0.0
        self._origin: float | None = None
        self._weight = 1.0

    def _advance(self, now: float) -> None:
        if self._origin is None:
            self._origin = now
        # Later requests weigh more, rather than every count decaying: O(1) a request.
        exponent = (now - self._origin) / self.half_life_s
        if exponent > 40:  # rescale before the weights overflow
            factor = 2.0 ** -min(exponent, 1000.0)
            self._counts = {a: c * factor for a, c in self._counts.items() if c * factor > 0}
            self._total *= factor
            self._origin, exponent = now, 0.0
        self._weight = 2.0 ** exponent

    def record(self, adapter: str, now: float, requests: float = 1.0) -> None:
        self._advance(now)
        added = requests * self._weight
        self._counts[adapter] = self._counts.get(adapter, 0.0) + added
        self._total += added
        if len(self._counts) > self.limit:  # forget the coldest half
            keep = sorted(self._counts.items(), key=lambda item: item[1])[self.limit // 2:]
            self._counts = dict(keep)

    def share(self, adapter: str) -> float:
        return self._counts.get(adapter, 0.0) / max(self._total, self.floor * self._weight)


def choose_consistent(ring: HashRing, replicas: Mapping[str, ReplicaState], adapter: str,
                      share: float, policy: HashingPolicy = HashingPolicy(), *,
                      total_load: int | None = None,
                      holders: Iterable[str] | None = None) -> Decision | None:
    """The replica for one request for `adapter`, which draws `share` of the requests.
    `replicas` are the live ones by name (the ring's names); `total_load` is the sum of their
    loads and `holders` those with the adapter in GPU or host memory, each computed here when
    not given (the simulator keeps both as it goes, for a thousand replicas)."""
    if not replicas:
        return None
    if total_load is None:
        total_load = sum(r.load for r in replicas.values())
    holders = (list(holders) if holders is not None
               else [n for n, r in replicas.items() if r.tier(adapter) < TIER_DISK])
    # A replica takes a request while under c times the average load, this one included.
    capacity = max(policy.min_capacity,
                   math.ceil(policy.load_factor * (total_load + 1) / len(replicas)))
    penalty = policy.tier_penalty
    best: tuple[int, float, int, str] | None = None
    walk = ring.walk(adapter)
    homes = home_count(share, len(replicas), policy)
    if not holders:
        homes = max(homes, policy.cold_choices)
    rank = 0
    for rank, name in enumerate(itertools.islice(walk, homes)):
        replica = replicas.get(name)
        if replica is not None and replica.load < capacity:
            tier = replica.tier(adapter)
            # Held nowhere: a home with it on disk (a load) beats one without (a fetch, ten
            # times that) whatever their queues, which the bound keeps within reach.
            score = (0 if holders else tier, replica.load + penalty[tier], rank, name)
            best = score if best is None else min(best, score)
    held = False
    for name in holders:
        held = True
        replica = replicas.get(name)
        if replica is not None and replica.load < capacity:
            score = (0, replica.load + penalty[replica.tier(adapter)], rank + 1, name)
            best = score if best is None else min(best, score)
    if best is None:
        # Every home and holder is full: the next replica clockwise under the bound, the
        # same one for every overflowing request of this adapter while loads stay so.
        spill = next((n for n in walk if n in replicas and replicas[n].load < capacity), None)
        # Nobody under the bound (a stale total): the least loaded.
        name = spill if spill is not None else min(replicas.values(),
                                                    key=lambda r: (r.load, r.name)).name
    else:
        name = best[3]
    if replicas[name].tier(adapter) < TIER_DISK:
        return Decision(name, "hit")
    return Decision(name, "spill" if held else "load")


class HomeGrowth:
    """Prefetch: how many homes each adapter has been given, so that the homes its growing
    demand earns are loaded into host memory ahead of the requests the router will send there
    (the simulator's rule and the API's). An adapter starts with one home, which its first
    request loads."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._homes: dict[str, int] = {}

    def placed(self, adapter: str, homes: int) -> None:
        """`adapter` already has `homes` homes (placed ahead of any request)."""
        self._homes[adapter] = homes

    def grow(self, ring: HashRing, adapter: str, share: float, replicas: int,
             policy: HashingPolicy = HashingPolicy()) -> list[str]:
        """The homes `adapter` has earned since last asked: to prefetch it to."""
        had = self._homes.get(adapter, 1)
        k = home_count(share, replicas, policy)
        if k <= had:
            return []
        if len(self._homes) >= self.limit:  # forget the fewest-homed half
            keep = sorted(self._homes.items(), key=lambda item: item[1])[self.limit // 2:]
            self._homes = dict(keep)
        self._homes[adapter] = k
        return ring.homes(adapter, k)[had:]


class ConsistentRouter:
    """`choose_consistent` with its state, for the API: a ring per replica set (rebuilt when
    replicas join or leave), the adapters' demand, and the homes each has been prefetched
    to."""

    def __init__(self, policy: HashingPolicy = HashingPolicy(),
                 demand: DemandTracker | None = None) -> None:
        self.policy = policy
        self.demand = demand or DemandTracker()
        self.growth = HomeGrowth()
        self._rings: dict[frozenset[str], HashRing] = {}

    def ring(self, names: Iterable[str]) -> HashRing:
        key = frozenset(names)
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) > 16:  # replica sets of the past
                self._rings.clear()
            ring = self._rings[key] = HashRing(key, self.policy.vnodes)
        return ring

    def choose(self, replicas: Sequence[ReplicaLoad], adapter: str | None,
               now: float) -> Decision | None:
        if not replicas:
            return None
        if adapter is None:
            return Decision(_least_loaded(replicas).name, "base")
        self.demand.record(adapter, now)
        by_name = {r.name: r for r in replicas}
        return choose_consistent(self.ring(by_name), by_name, adapter,
                                 self.demand.share(adapter), self.policy)


    def prefetch(self, replicas: Sequence[ReplicaLoad], adapter: str) -> list[str]:
        """The replicas to load `adapter` into ahead of its requests (after `choose` recorded
        the request): the homes its demand earned since, that do not hold it yet."""
        by_name = {r.name: r for r in replicas}
        homes = self.growth.grow(self.ring(by_name), adapter, self.demand.share(adapter),
                                 len(by_name), self.policy)
        return [name for name in homes if by_name[name].tier(adapter) >= TIER_DISK]
