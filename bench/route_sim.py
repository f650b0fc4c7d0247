"""Routing at fleet scale, SIMULATED: N replicas, thousands of tenant adapters, and the real
routers (`serving.router`: the code that routes the API's requests) against round robin,
least loaded and plain hashing on the adapter id.

A discrete-event model of each replica, one event a decode step: a queue, a batch of at most
`max_batch` requests that advances one token a step, at most `gpu_slots` distinct adapters in
a batch (vLLM's `--max-loras`: a request whose adapter would be one too many waits, as vLLM's
scheduler skips it), a step that costs more with more distinct adapters in it, a prefill per
admitted request. Each replica keeps adapters in tiers, each a least-recently-used cache:
GPU slots (`gpu_slots`), host memory (`host_slots`, vLLM's CPU LoRA cache `--max-cpu-loras`,
the adapters tuneserve registers), the node's disk cache (`disk_slots`); the rest are in the
blob store only. A request is charged what its adapter's tier costs: nothing in a GPU slot, a
copy from host memory (added to the step that admits it), a load from disk, a fetch from the
blob store then a load (the request waits; the replica goes on). An adapter in use is never
evicted. Traffic: Poisson arrivals, Zipf(alpha) adapter popularity, tenants that appear and go
cold. Parameters come from a profile in `bench/route_profiles.json` (one measured on this
machine's CPU replicas, one for an H100-class GPU from published figures, cited there).

Every policy starts with its replicas' host and disk tiers filled from the same demand history
by its own placement rule (round robin and least loaded: the most asked adapters on every
replica; hashing and the consistent router: each adapter on its home(s); today's affinity
router: dealt over the replicas in demand order, as it places them on an idle fleet), then
runs `warmup_s` unmeasured. The consistent router also prefetches into host memory: an
adapter's new homes when its demand grows, and the new homes of what lost replicas held.

Usage: `python bench/route_sim.py [--profile h100-llama-8b] [--quick] [--plots docs]`.
"""

import argparse
import bisect
import hashlib
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, KeysView
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.router import (  # noqa: E402
    TIER_COLD,
    TIER_DISK,
    TIER_GPU,
    TIER_HOST,
    DemandTracker,
    HashingPolicy,
    HashRing,
    HomeGrowth,
    Policy,
    RoutingPolicy,
    choose_consistent,
    choose_with,
    home_count,
)

POLICIES: tuple[Policy, ...] = ("consistent", "affinity", "round_robin", "least_loaded",
                                "adapter_hash")
PROFILES = Path(__file__).with_name("route_profiles.json")
TIERS = ("gpu", "host", "disk", "blob")


@dataclass(frozen=True)
class Profile:
    decode_step_s: float
    prefill_s_per_token: float
    distinct_adapter_step_penalty: float
    max_batch: int
    prompt_tokens: int
    output_tokens: int
    gpu_slots: int  # vLLM's --max-loras: distinct adapters in a batch
    host_slots: int  # vLLM's --max-cpu-loras: adapters registered, in host memory
    disk_slots: int  # adapters on the node's disk cache
    host_copy_s: float  # host memory -> GPU slot
    disk_load_s: float  # disk -> host memory
    blob_fetch_s: float  # blob store -> disk

    @classmethod
    def load(cls, name: str) -> "Profile":
        data = json.loads(PROFILES.read_text())[name]
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def replica_requests_per_s(self) -> float:
        """A replica's throughput with full batches of one adapter."""
        per_request = (self.output_tokens * self.decode_step_s / self.max_batch
                       + self.prompt_tokens * self.prefill_s_per_token)
        return 1 / per_request


@dataclass(frozen=True)
class Scenario:
    replicas: int
    adapters: int
    alpha: float = 1.1
    utilization: float = 0.7  # arrivals as a share of the fleet's one-adapter throughput
    duration_s: float = 60.0  # measured, after the warm-up
    warmup_s: float = 0.0  # unmeasured, first
    hot_share: float = 0.0  # one tenant's share of all requests
    kill_share: float = 0.0  # replicas killed half way through the measured time
    churn_every_s: float = 10.0  # this often, 5 % of the popularity ranks go to new tenants
    seed: int = 1
    requests: int | None = None  # a fixed count instead of a duration (calibration)
    prefill: bool = False  # tiers start filled from the demand history (see the docstring)
    # Closed loop instead of Poisson arrivals: this many clients, each sending its next
    # request when its last one ends (bench/route.py's 8 at a time); with `requests`.
    concurrency: int | None = None


class Request:
    __slots__ = ("arrival", "adapter", "measured", "started")

    def __init__(self, arrival: float, adapter: str, measured: bool) -> None:
        self.arrival = arrival
        self.adapter = adapter
        self.measured = measured
        self.started = False  # has had its first token


class Replica:
    """One replica: its tiers, queue and batch. A `ReplicaState` for the consistent router."""

    def __init__(self, name: str, profile: Profile) -> None:
        self.name = name
        self.gpu: OrderedDict[str, None] = OrderedDict()
        self.host: OrderedDict[str, None] = OrderedDict()  # loading ones included
        self.disk: OrderedDict[str, None] = OrderedDict()
        self.loading: dict[str, list[Request]] = {}  # adapter -> requests waiting for it
        self.in_use: Counter[str] = Counter()  # adapter -> its requests here, not finished
        self.queue: deque[Request] = deque()  # routed, adapter ready, not admitted
        self.batch: Counter[str] = Counter()  # adapter -> its requests in the batch
        self.finishing: dict[int, list[Request]] = {}  # step -> requests ending with it
        self.fresh: list[Request] = []  # admitted into the current step
        self.running = 0
        self.load = 0  # routed here and not finished: loading, waiting, running
        self.step_no = 0
        self.busy = False
        self.alive = True
        self.slots = profile.host_slots

    def tier(self, adapter: str) -> int:
        if adapter in self.gpu:
            return TIER_GPU
        if adapter in self.host:
            return TIER_HOST
        return TIER_DISK if adapter in self.disk else TIER_COLD

    # As `ReplicaLoad`, for today's router and the baselines (`choose_with` reads only
    # these): the replica itself, so a thousand of them need no copies a request.
    @property
    def waiting(self) -> int:
        return self.load - self.running

    @property
    def adapters(self) -> KeysView[str]:
        return self.host.keys()

    @property
    def pinned(self) -> int:
        return len(self.in_use)

    @property
    def has_free_slot(self) -> bool:
        return len(self.host) < self.slots

    @property
    def can_make_room(self) -> bool:
        return self.has_free_slot or len(self.in_use) < len(self.host)


@dataclass
class Result:
    tiers: Counter[str] = field(default_factory=Counter)  # measured requests by tier
    loads: int = 0  # adapters loaded into host memory for a request (measured)
    prefetches: int = 0  # ... ahead of any request (measured)
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    disrupted: int = 0
    moved: float = 0.0  # share of adapters whose first home changed when replicas were lost
    window: float = 1.0  # measured seconds
    seconds: float = 0.0  # the simulation's own run time

    @property
    def requests(self) -> int:
        return sum(self.tiers.values())

    @property
    def hits(self) -> int:
        """Requests whose adapter was in a GPU slot or host memory."""
        return self.tiers["gpu"] + self.tiers["host"]

    def row(self) -> dict[str, float]:
        q = statistics.quantiles(self.ttft, n=100) if len(self.ttft) > 1 else [0.0] * 99
        n = max(self.requests, 1)
        return {"hit_rate": self.hits / n,
                **{f"{tier}_rate": self.tiers[tier] / n for tier in TIERS},
                "loads_per_s": self.loads / self.window,
                "prefetch_per_s": self.prefetches / self.window,
                "ttft_p50_ms": q[49] * 1000, "ttft_p95_ms": q[94] * 1000,
                "ttft_p99_ms": q[98] * 1000, "tokens_per_s": self.tokens / self.window,
                "disrupted": float(self.disrupted), "moved": self.moved}


class Simulation:
    def __init__(self, profile: Profile, scenario: Scenario, policy: Policy,
                 hashing: HashingPolicy | None = None) -> None:
        self.p, self.s, self.policy = profile, scenario, policy
        self.hashing = hashing or HashingPolicy()
        self.rng = random.Random(scenario.seed)
        self.replicas = [Replica(f"r{i:04d}", profile) for i in range(scenario.replicas)]
        self.alive = {r.name: r for r in self.replicas}
        self.views = list(self.replicas)
        self.ring = HashRing(self.alive, self.hashing.vnodes)
        self.total_load = 0
        self.where: dict[str, set[str]] = {}  # adapter -> replicas with it in host memory
        self.ranks = [f"t{i}" for i in range(scenario.adapters)]  # rank -> adapter id
        self.weights = list(itertools.accumulate(1 / (k + 1) ** scenario.alpha
                                                 for k in range(scenario.adapters)))
        self.rate = scenario.utilization * scenario.replicas * profile.replica_requests_per_s
        self.demand = DemandTracker()
        self.growth = HomeGrowth()  # the homes each adapter was prefetched to
        self.hashed: dict[str, str] = {}  # adapter -> its replica under `adapter_hash`
        self.settings = RoutingPolicy()
        self.events: list[tuple[float, int, int, object]] = []
        self.seq = itertools.count()
        self.tick = itertools.count()
        self.fresh_ids = itertools.count(scenario.adapters)
        self.result = Result()
        self.closed = False  # every request of a fixed count has arrived
        self.measuring_from = scenario.warmup_s
        self.measuring_to = (scenario.warmup_s + scenario.duration_s
                             if scenario.requests is None else math.inf)

    # -- events ----------------------------------------------------------------------------

    def push(self, at: float, kind: int, payload: object = None) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, payload))

    def run(self) -> Result:
        started = time.perf_counter()
        s = self.s
        self._seed_demand()
        if s.prefill:
            self._prefill()
        end = s.warmup_s + s.duration_s
        count = 0
        if s.concurrency is None:
            self.push(self.rng.expovariate(self.rate), ARRIVE)
        else:
            for _ in range(s.concurrency):
                self.push(0.0, ARRIVE)
        if s.requests is None:
            for k in range(1, int(end / s.churn_every_s) + 1):
                self.push(k * s.churn_every_s, CHURN)
        if s.kill_share:
            self.push(s.warmup_s + s.duration_s / 2, KILL)
        handlers: dict[int, Callable[[float, object], None]] = {
            LOADED: self._loaded, STEP: self._step, CHURN: self._churn, KILL: self._kill}
        at = 0.0
        last_arrival = 0.0
        while self.events:
            at, _, kind, payload = heapq.heappop(self.events)
            if kind == ARRIVE:
                count += 1
                last_arrival = at
                self._arrive(at)
                more = at < end if s.requests is None else count < s.requests
                if more and s.concurrency is None:
                    self.push(at + self.rng.expovariate(self.rate), ARRIVE)
                elif not more:
                    self.closed = True  # no client sends another
            else:
                handlers[kind](at, payload)
        self.result.window = (last_arrival - s.warmup_s if s.requests is None
                              else max(at, 1e-9))
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _arrive(self, now: float) -> None:
        s = self.s
        if s.hot_share and self.rng.random() < s.hot_share:
            adapter = "hot"
        else:
            adapter = self.ranks[bisect.bisect_left(self.weights,
                                                    self.rng.random() * self.weights[-1])]
        request = Request(now, adapter, now >= self.measuring_from)
        self.route(now, request)

    def route(self, now: float, request: Request) -> None:
        adapter = request.adapter
        if self.policy == "consistent":
            self.demand.record(adapter, now)
            share = self.demand.share(adapter)
            decision = choose_consistent(self.ring, self.alive, adapter, share, self.hashing,
                                         total_load=self.total_load,
                                         holders=self.where.get(adapter, ()))
            self._prefetch_for_demand(now, adapter, share)
        elif self.policy == "adapter_hash":  # its choice, kept: a thousand hashes a request
            if adapter not in self.hashed:
                self.hashed[adapter] = self._rendezvous(adapter)
            self._dispatch(now, self.alive[self.hashed[adapter]], request)
            return
        else:
            decision = choose_with(self.policy, self.views, adapter,  # type: ignore[arg-type]
                                   next(self.tick), self.settings)
        assert decision is not None
        self._dispatch(now, self.alive[decision.replica], request)

    def _dispatch(self, now: float, replica: Replica, request: Request) -> None:
        adapter = request.adapter
        if adapter in replica.gpu:
            tier = "gpu"
        elif adapter in replica.host:  # loaded, or loading: the router sees it registered
            tier = "host"
        else:
            tier = "disk" if adapter in replica.disk else "blob"
        if request.measured:
            self.result.tiers[tier] += 1
        replica.in_use[adapter] += 1
        replica.load += 1
        self.total_load += 1
        if adapter in replica.loading:
            replica.loading[adapter].append(request)
        elif adapter in replica.host:
            replica.host.move_to_end(adapter)
            replica.queue.append(request)
            self._kick(now, replica)
        else:
            if request.measured:
                self.result.loads += 1
            self._start_load(now, replica, adapter, [request])

    # -- tiers -----------------------------------------------------------------------------

    def _start_load(self, now: float, replica: Replica, adapter: str,
                    requests: list[Request]) -> None:
        cost = self.p.disk_load_s + (0 if adapter in replica.disk else self.p.blob_fetch_s)
        self._into_host(replica, adapter)
        replica.loading[adapter] = requests
        self.push(now + cost, LOADED, (replica, adapter))

    def _into_host(self, replica: Replica, adapter: str) -> None:
        """Takes a host slot for `adapter`, evicting the least recently used idle ones; with
        every one in use it goes over its count, as the adapter manager does."""
        host = replica.host
        while len(host) >= replica.slots:
            idle = next((a for a in host if not replica.in_use[a]
                         and a not in replica.loading), None)
            if idle is None:
                break
            del host[idle]
            replica.gpu.pop(idle, None)
            holders = self.where.get(idle)
            if holders is not None:
                holders.discard(replica.name)
        host[adapter] = None
        self.where.setdefault(adapter, set()).add(replica.name)

    def _into_disk(self, replica: Replica, adapter: str) -> None:
        disk = replica.disk
        disk[adapter] = None
        disk.move_to_end(adapter)
        while len(disk) > self.p.disk_slots:
            disk.popitem(last=False)

    def _loaded(self, now: float, payload: object) -> None:
        replica, adapter = payload  # type: ignore[misc]
        if not replica.alive:
            return
        self._into_disk(replica, adapter)
        waiting = replica.loading.pop(adapter, [])
        replica.queue.extend(waiting)
        if waiting:
            self._kick(now, replica)

    # -- a replica's steps -----------------------------------------------------------------

    def _kick(self, now: float, replica: Replica) -> None:
        if not replica.busy and replica.alive and replica.queue:
            replica.busy = True
            self.push(now, STEP, replica)

    def _step(self, now: float, payload: object) -> None:
        replica: Replica = payload  # type: ignore[assignment]
        if not replica.alive:
            return
        p, result = self.p, self.result
        measured = self.measuring_from <= now <= self.measuring_to
        if replica.running:  # the step that ends now
            if measured:
                result.tokens += replica.running
            for request in replica.fresh:
                request.started = True
                if request.measured:
                    result.ttft.append(now - request.arrival)
            for request in replica.finishing.pop(replica.step_no, ()):
                self._finish(replica, request.adapter)
                if self.s.concurrency is not None and not self.closed:
                    self.push(now, ARRIVE)  # its client's next request
        replica.step_no += 1
        # Admit what fits: batch room, and at most `gpu_slots` distinct adapters.
        batch, gpu = replica.batch, replica.gpu
        room = p.max_batch - replica.running
        admitted: list[Request] = []
        skipped: list[Request] = []
        copies = 0
        while replica.queue and room:
            request = replica.queue.popleft()
            adapter = request.adapter
            if adapter not in batch:
                if len(batch) >= p.gpu_slots:
                    skipped.append(request)
                    continue
                if adapter not in gpu:
                    copies += 1
                    while len(gpu) >= p.gpu_slots:
                        victim = next(a for a in gpu if a not in batch)
                        del gpu[victim]
                    gpu[adapter] = None
            gpu.move_to_end(adapter)
            batch[adapter] += 1
            admitted.append(request)
            room -= 1
        replica.queue.extendleft(reversed(skipped))
        if admitted:
            end = replica.step_no + p.output_tokens - 1
            replica.finishing.setdefault(end, []).extend(admitted)
            replica.running += len(admitted)
        replica.fresh = admitted
        if not replica.running:
            replica.busy = False
            return
        cost = (p.decode_step_s * (1 + p.distinct_adapter_step_penalty * (len(batch) - 1))
                + len(admitted) * p.prompt_tokens * p.prefill_s_per_token
                + copies * p.host_copy_s)
        self.push(now + cost, STEP, replica)

    def _finish(self, replica: Replica, adapter: str) -> None:
        replica.running -= 1
        replica.load -= 1
        self.total_load -= 1
        replica.batch[adapter] -= 1
        if not replica.batch[adapter]:
            del replica.batch[adapter]
        replica.in_use[adapter] -= 1
        if not replica.in_use[adapter]:
            del replica.in_use[adapter]

    # -- demand, prefetch and placement ------------------------------------------------------

    def _popularity(self) -> list[tuple[str, float]]:
        """The demand history: each adapter's share of requests, most asked first."""
        hot = self.s.hot_share
        total = self.weights[-1]
        shares = [(adapter, (1 - hot) * (self.weights[k] - (self.weights[k - 1] if k else 0))
                   / total) for k, adapter in enumerate(self.ranks)]
        if hot:
            shares.append(("hot", hot))
        shares.sort(key=lambda item: -item[1])
        return shares

    def _seed_demand(self) -> None:
        if self.policy != "consistent":
            return
        # What a half-life of past requests would have recorded.
        past = self.rate * self.demand.half_life_s / math.log(2)
        for adapter, share in self._popularity():
            self.demand.record(adapter, 0.0, share * past)

    def _prefill(self) -> None:
        """Each policy's host and disk tiers as its own placement leaves them after a long
        run on the demand history (see the module docstring)."""
        popular = self._popularity()
        n = len(self.replicas)
        room = max(self.p.disk_slots, self.p.host_slots)
        placed: dict[str, list[str]] = {r.name: [] for r in self.replicas}  # most asked first
        if self.policy in ("round_robin", "least_loaded"):
            top = [adapter for adapter, _ in popular[:room]]
            placed = {r.name: top for r in self.replicas}
        else:
            for i, (adapter, share) in enumerate(popular):
                if self.policy == "consistent":
                    homes = self.ring.homes(adapter, home_count(share, n, self.hashing))
                    self.growth.placed(adapter, len(homes))
                elif self.policy == "adapter_hash":
                    homes = [self._rendezvous(adapter)]
                else:  # affinity: dealt over the replicas in demand order
                    homes = [self.replicas[i % n].name]
                for name in homes:
                    if len(placed[name]) < room:
                        placed[name].append(adapter)
        for replica in self.replicas:
            # The most asked last: the most recently used.
            names = placed[replica.name]
            replica.disk = OrderedDict.fromkeys(reversed(names[:self.p.disk_slots]))
            replica.host = OrderedDict.fromkeys(reversed(names[:self.p.host_slots]))
            for adapter in replica.host:
                self.where.setdefault(adapter, set()).add(replica.name)

    def _rendezvous(self, adapter: str) -> str:
        """`adapter_hash`'s choice (`serving.router.choose_with`), without its views."""
        return max(self.alive, key=lambda name: hashlib.blake2b(
            f"{adapter}\0{name}".encode(), digest_size=8).digest())

    def _prefetch(self, now: float, replica: Replica, adapter: str) -> None:
        if adapter in replica.host or not replica.alive:
            return
        if now >= self.measuring_from:
            self.result.prefetches += 1
        self._start_load(now, replica, adapter, [])

    def _prefetch_for_demand(self, now: float, adapter: str, share: float) -> None:
        """An adapter whose demand earns it more homes is loaded into their host memory
        ahead of the requests the router will send there."""
        for name in self.growth.grow(self.ring, adapter, share, len(self.alive), self.hashing):
            self._prefetch(now, self.alive[name], adapter)

    # -- churn and failures -----------------------------------------------------------------

    def _churn(self, now: float, payload: object) -> None:
        for _ in range(max(1, self.s.adapters // 20)):
            self.ranks[self.rng.randrange(len(self.ranks))] = f"t{next(self.fresh_ids)}"

    def _kill(self, now: float, payload: object) -> None:
        victims = self.rng.sample(self.replicas,
                                  max(1, round(self.s.kill_share * len(self.replicas))))
        before = self.ring
        lost: list[Request] = []
        held: set[str] = set()
        for replica in victims:
            replica.alive = False
            del self.alive[replica.name]
            self.total_load -= replica.load
            for adapter in replica.host:
                held.add(adapter)
                self.where.get(adapter, set()).discard(replica.name)
            lost.extend(replica.queue)
            for requests in replica.loading.values():
                lost.extend(requests)
            for requests in replica.finishing.values():
                lost.extend(requests)
        self.views = [r for r in self.replicas if r.alive]
        self.hashed.clear()
        self.ring = HashRing(self.alive, self.hashing.vnodes)
        sample = self.ranks[:2000]
        self.result.moved = sum(before.homes(a)[0] != self.ring.homes(a)[0]
                                for a in sample) / len(sample)
        if self.policy == "consistent":
            # What the lost replicas held is asked for at its new homes: load it there first.
            n = len(self.alive)
            for adapter in sorted(held, key=lambda a: -self.demand.share(a)):
                k = home_count(self.demand.share(adapter), n, self.hashing)
                for name in self.ring.homes(adapter, k):
                    self._prefetch(now, self.alive[name], adapter)
        for request in lost:  # the client retries; its TTFT clock keeps running
            self.result.disrupted += 1
            if not request.started:
                self.route(now, request)


ARRIVE, LOADED, STEP, CHURN, KILL = range(5)


def simulate(profile: Profile, scenario: Scenario, policy: Policy,
             hashing: HashingPolicy | None = None) -> Result:
    return Simulation(profile, scenario, policy, hashing).run()


def compare(profile: Profile, scenario: Scenario,
            policies: tuple[Policy, ...] = POLICIES) -> dict[str, dict[str, float]]:
    return {policy: simulate(profile, scenario, policy).row() for policy in policies}


def _print(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'policy':13s} {'GPU|host':>8s} {'gpu':>6s} {'host':>6s} {'disk':>6s} "
          f"{'blob':>6s} {'loads/s':>8s} {'pref/s':>7s} {'p50 ms':>8s} {'p95 ms':>9s} "
          f"{'p99 ms':>9s} {'tok/s':>9s}")
    for policy, r in rows.items():
        print(f"  {policy:13s} {r['hit_rate']:8.3f} {r['gpu_rate']:6.3f} {r['host_rate']:6.3f} "
              f"{r['disk_rate']:6.3f} {r['blob_rate']:6.3f} {r['loads_per_s']:8.1f} "
              f"{r['prefetch_per_s']:7.1f} {r['ttft_p50_ms']:8.1f} {r['ttft_p95_ms']:9.1f} "
              f"{r['ttft_p99_ms']:9.1f} {r['tokens_per_s']:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="h100-llama-8b")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--plots", type=Path, default=None,
                        help="directory for the PNG plots (e.g. docs)")
    args = parser.parse_args()
    profile = Profile.load(args.profile)
    started = time.perf_counter()
    print(f"SIMULATED with profile {args.profile!r} (bench/route_profiles.json); the real "
          "routers (serving.router) decide every request")

    def scenario(replicas: int, adapters: int, **kw: float) -> Scenario:
        # Fewer seconds for bigger fleets: the requests a replica sees stay many.
        measured = {10: 30.0, 100: 20.0, 1000: 4.0}[replicas] / (3 if args.quick else 1)
        return Scenario(replicas, adapters, duration_s=measured,
                        warmup_s=min(10.0, measured / 2), prefill=True, **kw)  # type: ignore[arg-type]

    scaling: dict[tuple[int, int], dict[str, dict[str, float]]] = {}
    for adapters in (10_000, 100_000):
        for n in (10, 100, 1000):
            t = time.perf_counter()
            scaling[(n, adapters)] = compare(profile, scenario(n, adapters))
            _print(f"{n} replicas x {adapters} adapters, Zipf 1.1, 70 % load "
                   f"({time.perf_counter() - t:.0f} s)", scaling[(n, adapters)])
    alphas = {}
    for alpha in (0.8, 1.5):
        alphas[alpha] = compare(profile, scenario(100, 10_000, alpha=alpha))
        _print(f"100 replicas x 10000 adapters, Zipf {alpha}", alphas[alpha])
    hot = compare(profile, scenario(100, 10_000, hot_share=0.1))
    _print("one hot tenant: 10 % of all requests (100 x 10000, Zipf 1.1)", hot)
    killed = compare(profile, scenario(100, 10_000, kill_share=0.1))
    _print("10 % of replicas lost half way (100 x 10000, Zipf 1.1)", killed)
    print(f"  adapters whose first home moved: consistent ring "
          f"{killed['consistent']['moved']:.3f}, rendezvous hashing "
          f"{killed['adapter_hash']['moved']:.3f}")
    ring = HashRing([f"r{i:04d}" for i in range(100)])
    grown = HashRing([f"r{i:04d}" for i in range(101)])
    ids = [f"t{i}" for i in range(10_000)]
    moved = sum(ring.homes(a)[0] != grown.homes(a)[0] for a in ids) / len(ids)
    print(f"  one replica joining 100: {moved:.3f} of 10000 adapters change home")
    print(f"\nall scenarios in {time.perf_counter() - started:.0f} s")
    if args.plots:
        plot(args.plots, args.profile, scaling, hot, killed)


def plot(directory: Path, profile: str,
         scaling: dict[tuple[int, int], dict[str, dict[str, float]]],
         hot: dict[str, dict[str, float]], killed: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, adapters in zip(axes, (10_000, 100_000), strict=True):
        hits, p95 = row
        sizes = sorted(n for n, a in scaling if a == adapters)
        for policy in POLICIES:
            hits.plot(sizes, [scaling[(n, adapters)][policy]["hit_rate"] for n in sizes],
                      marker="o", label=policy)
            line = p95.plot(sizes, [scaling[(n, adapters)][policy]["ttft_p95_ms"]
                                    for n in sizes], marker="o", label=f"{policy} p95")[0]
            p95.plot(sizes, [scaling[(n, adapters)][policy]["ttft_p50_ms"] for n in sizes],
                     marker="x", linestyle="--", color=line.get_color(),
                     label=f"{policy} p50")
        hits.set(xlabel="replicas", ylabel="hit rate (GPU or host memory)", xscale="log",
                 title=f"{adapters} adapters")
        p95.set(xlabel="replicas", ylabel="time to first token (ms)", xscale="log",
                yscale="log", title=f"{adapters} adapters")
        hits.legend(fontsize=7)
        p95.legend(fontsize=6)
    figure.suptitle(f"SIMULATED, profile {profile}: Zipf 1.1, 70 % load")
    figure.tight_layout()
    figure.savefig(directory / "route-sim-scaling.png", dpi=110)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, rows) in zip(axes, (("one hot tenant (10 %)", hot),
                                        ("10 % of replicas lost", killed)), strict=True):
        ax.bar(list(rows), [rows[p]["ttft_p95_ms"] for p in rows])
        ax.set(title=title, ylabel="p95 time to first token (ms)", yscale="log")
        ax.tick_params(axis="x", rotation=20)
    figure.suptitle(f"SIMULATED, profile {profile}: 100 replicas x 10,000 adapters")
    figure.tight_layout()
    figure.savefig(directory / "route-sim-cases.png", dpi=110)
    print(f"plots in {directory}/route-sim-scaling.png and route-sim-cases.png")


if __name__ == "__main__":
    main()
