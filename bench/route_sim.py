"""Routing at fleet scale, SIMULATED: N replicas, thousands of tenant adapters, and the real
router (`serving.router.choose_with`, the code that routes the API's requests) against
round robin, least loaded and consistent hashing on the adapter id.

A discrete-event model of each replica: a queue, a batch of at most `max_batch` requests that
advances one token a step, a step that costs more with more distinct adapters in it, a prefill
per admitted request, `adapter_slots` registered adapters (least recently used, never one in
use, evicted for a new one) and a load time for an adapter that is not registered. Traffic:
Poisson arrivals, Zipf(alpha) adapter popularity, tenants that appear and go cold. Parameters
come from a profile in `bench/route_profiles.json` (one measured on this machine's CPU
replicas, one for an H100-class GPU from published figures, cited there).

Usage: `python bench/route_sim.py [--profile h100-llama-8b] [--quick] [--plots docs]`.
"""

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.router import Policy, ReplicaLoad, RoutingPolicy, choose_with  # noqa: E402

POLICIES: tuple[Policy, ...] = ("affinity", "round_robin", "least_loaded", "adapter_hash")
PROFILES = Path(__file__).with_name("route_profiles.json")


@dataclass(frozen=True)
class Profile:
    adapter_load_s: float
    decode_step_s: float
    prefill_s_per_token: float
    distinct_adapter_step_penalty: float
    max_batch: int
    adapter_slots: int
    prompt_tokens: int
    output_tokens: int

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
    duration_s: float = 60.0
    hot_share: float = 0.0  # one tenant's share of all requests
    kill_share: float = 0.0  # replicas killed at half time
    churn_every_s: float = 10.0  # this often, 5 % of the popularity ranks go to new tenants
    seed: int = 1
    requests: int | None = None  # a fixed count instead of a duration (calibration)


@dataclass
class Request:
    arrival: float
    adapter: str
    left: int
    first_token: float | None = None


@dataclass
class Replica:
    name: str
    slots: int
    adapters: OrderedDict[str, int] = field(default_factory=OrderedDict)  # name -> in use
    waiting: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    loading: int = 0
    busy: bool = False
    alive: bool = True
    _view: ReplicaLoad | None = None
    _held: frozenset[str] = frozenset()

    def view(self) -> ReplicaLoad:
        if self._view is None:
            self._view = ReplicaLoad(self.name, len(self.running),
                                     len(self.waiting) + self.loading, self._held, self.slots,
                                     sum(1 for n in self.adapters.values() if n))
        return self._view

    def changed(self, adapters: bool = False) -> None:
        self._view = None
        if adapters:
            self._held = frozenset(self.adapters)


@dataclass
class Result:
    hits: int = 0
    loads: int = 0
    requests: int = 0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    disrupted: int = 0
    elapsed: float = 0.0

    def row(self, duration: float) -> dict[str, float]:
        """Per-second figures over the arrivals' `duration` (loads) and until the last answer
        (throughput)."""
        q = statistics.quantiles(self.ttft, n=100) if len(self.ttft) > 1 else [0.0] * 99
        return {"hit_rate": self.hits / max(self.requests, 1),
                "loads_per_s": self.loads / duration,
                "ttft_p50_ms": q[49] * 1000, "ttft_p95_ms": q[94] * 1000,
                "ttft_p99_ms": q[98] * 1000, "tokens_per_s": self.tokens / self.elapsed,
                "disrupted": float(self.disrupted)}


def simulate(profile: Profile, scenario: Scenario, policy: Policy) -> Result:
    rng = random.Random(scenario.seed)
    replicas = [Replica(f"r{i:03d}", profile.adapter_slots) for i in range(scenario.replicas)]
    by_name = {r.name: r for r in replicas}
    ranks = [f"t{i}" for i in range(scenario.adapters)]  # rank -> adapter id
    weights = list(itertools.accumulate(1 / (k + 1) ** scenario.alpha
                                        for k in range(scenario.adapters)))
    rate = (scenario.utilization * scenario.replicas * profile.replica_requests_per_s)
    settings = RoutingPolicy()
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    result = Result()
    tick = itertools.count()
    fresh = itertools.count(scenario.adapters)

    def push(at: float, kind: str, payload: object = None) -> None:
        heapq.heappush(events, (at, next(seq), kind, payload))

    def route(now: float, request: Request) -> None:
        alive = [r for r in replicas if r.alive]
        decision = choose_with(policy, [r.view() for r in alive], request.adapter, next(tick),
                               settings)
        assert decision is not None
        replica = by_name[decision.replica]
        if request.adapter in replica.adapters:
            result.hits += 1
            replica.adapters[request.adapter] += 1
            replica.adapters.move_to_end(request.adapter)
            replica.waiting.append(request)
            replica.changed()
            start(now, replica)
            return
        result.loads += 1
        while len(replica.adapters) >= replica.slots:
            idle = next((n for n, used in replica.adapters.items() if not used), None)
            if idle is None:
                break  # all in use: over the count, as the adapter manager does
            del replica.adapters[idle]
        replica.adapters[request.adapter] = 1
        replica.loading += 1
        replica.changed(adapters=True)
        push(now + profile.adapter_load_s, "loaded", (replica, request))

    def start(now: float, replica: Replica) -> None:
        if not replica.busy and replica.alive and (replica.waiting or replica.running):
            replica.busy = True
            push(now, "step", replica)

    def step(now: float, replica: Replica) -> None:
        admitted = 0
        while replica.waiting and len(replica.running) < profile.max_batch:
            replica.running.append(replica.waiting.popleft())
            admitted += 1
        distinct = len({r.adapter for r in replica.running})
        cost = (profile.decode_step_s
                * (1 + profile.distinct_adapter_step_penalty * max(distinct - 1, 0))
                + admitted * profile.prompt_tokens * profile.prefill_s_per_token)
        push(now + cost, "stepped", replica)
        replica.changed()

    def stepped(now: float, replica: Replica) -> None:
        if not replica.alive:
            return
        still = []
        for request in replica.running:
            if request.first_token is None:
                request.first_token = now
                result.ttft.append(now - request.arrival)
            request.left -= 1
            result.tokens += 1
            if request.left > 0:
                still.append(request)
            else:
                replica.adapters[request.adapter] -= 1
        replica.running = still
        replica.busy = False
        replica.changed()
        start(now, replica)

    # Arrivals, churn and failures, then the event loop.
    now, count = 0.0, 0
    while (scenario.requests is None and now < scenario.duration_s) or (
            scenario.requests is not None and count < scenario.requests):
        now += rng.expovariate(rate)
        count += 1
        push(now, "arrive")
    end = now
    for k in range(1, int(end / scenario.churn_every_s) + 1):
        push(k * scenario.churn_every_s, "churn")
    if scenario.kill_share:
        push(end / 2, "kill")

    at = 0.0
    while events:
        at, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            if scenario.hot_share and rng.random() < scenario.hot_share:
                adapter = "hot"
            else:
                adapter = ranks[_pick(weights, rng.random() * weights[-1])]
            result.requests += 1
            route(at, Request(at, adapter, profile.output_tokens))
        elif kind == "loaded":
            replica, request = payload  # type: ignore[misc]
            replica.loading -= 1
            if not replica.alive:
                continue
            replica.waiting.append(request)
            replica.changed()
            start(at, replica)
        elif kind == "step":
            step(at, payload)  # type: ignore[arg-type]
        elif kind == "stepped":
            stepped(at, payload)  # type: ignore[arg-type]
        elif kind == "churn":
            for _ in range(max(1, scenario.adapters // 20)):
                ranks[rng.randrange(len(ranks))] = f"t{next(fresh)}"  # a new tenant
        elif kind == "kill":
            victims = rng.sample(replicas, max(1, round(scenario.kill_share * len(replicas))))
            for replica in victims:
                replica.alive = False
                lost = list(replica.waiting) + replica.running
                replica.waiting.clear()
                replica.running = []
                for request in lost:  # the client retries; its TTFT clock keeps running
                    result.disrupted += 1
                    if request.first_token is None:
                        route(at, Request(request.arrival, request.adapter, request.left))
    result.elapsed = at  # the last answer's end: throughput counts the drain too
    return result


def _pick(cumulative: list[float], x: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def compare(profile: Profile, scenario: Scenario) -> dict[str, dict[str, float]]:
    return {policy: simulate(profile, scenario, policy).row(scenario.duration_s
                                                              if scenario.requests is None
                                                              else 1.0)
            for policy in POLICIES}


def _print(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'policy':13s} {'hit rate':>8s} {'loads/s':>8s} {'p50 ms':>8s} {'p95 ms':>9s} "
          f"{'p99 ms':>9s} {'tok/s':>9s}")
    for policy, r in rows.items():
        print(f"  {policy:13s} {r['hit_rate']:8.3f} {r['loads_per_s']:8.1f} "
              f"{r['ttft_p50_ms']:8.1f} {r['ttft_p95_ms']:9.1f} {r['ttft_p99_ms']:9.1f} "
              f"{r['tokens_per_s']:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="h100-llama-8b")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--plots", type=Path, default=None,
                        help="directory for the PNG plots (e.g. docs)")
    args = parser.parse_args()
    profile = Profile.load(args.profile)
    duration = 10.0 if args.quick else 30.0
    started = time.perf_counter()
    print(f"SIMULATED with profile {args.profile!r} (bench/route_profiles.json); the real "
          "router code (serving.router) decides every request")

    scaling: dict[int, dict[str, dict[str, float]]] = {}
    for n in (10, 30, 100):
        t = time.perf_counter()
        scaling[n] = compare(profile, Scenario(n, 100 * n, duration_s=duration))
        _print(f"{n} replicas x {100 * n} adapters, Zipf 1.1 ({time.perf_counter() - t:.0f} s)",
               scaling[n])
    alphas = {}
    for alpha in (0.8, 1.5):
        alphas[alpha] = compare(profile, Scenario(100, 10_000, alpha=alpha, duration_s=duration))
        _print(f"100 replicas x 10000 adapters, Zipf {alpha}", alphas[alpha])
    hot = compare(profile, Scenario(100, 10_000, hot_share=0.1, duration_s=duration))
    _print("one hot tenant: 10 % of all requests (100 x 10000, Zipf 1.1)", hot)
    killed = compare(profile, Scenario(100, 10_000, kill_share=0.1, duration_s=duration))
    _print("10 % of replicas killed at half time (100 x 10000, Zipf 1.1)", killed)
    print(f"\nall scenarios in {time.perf_counter() - started:.0f} s")
    if args.plots:
        plot(args.plots, args.profile, scaling, hot, killed)


def plot(directory: Path, profile: str, scaling: dict[int, dict[str, dict[str, float]]],
         hot: dict[str, dict[str, float]], killed: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    sizes = sorted(scaling)
    figure, (hits, p95) = plt.subplots(1, 2, figsize=(10, 4))
    for policy in POLICIES:
        hits.plot(sizes, [scaling[n][policy]["hit_rate"] for n in sizes], marker="o",
                  label=policy)
        line = p95.plot(sizes, [scaling[n][policy]["ttft_p95_ms"] for n in sizes], marker="o",
                        label=f"{policy} p95")[0]
        p95.plot(sizes, [scaling[n][policy]["ttft_p50_ms"] for n in sizes], marker="x",
                 linestyle="--", color=line.get_color(), label=f"{policy} p50")
    hits.set(xlabel="replicas (100 adapters each)", ylabel="adapter hit rate")
    p95.set(xlabel="replicas (100 adapters each)", ylabel="time to first token (ms)",
            yscale="log")
    hits.legend()
    p95.legend(fontsize=7)
    figure.suptitle(f"SIMULATED, profile {profile}: Zipf 1.1, 70 % load")
    figure.tight_layout()
    figure.savefig(directory / "route-sim-scaling.png", dpi=110)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, rows) in zip(axes, (("one hot tenant (10 %)", hot),
                                        ("10 % of replicas killed", killed)), strict=True):
        ax.bar(list(rows), [rows[p]["ttft_p95_ms"] for p in rows])
        ax.set(title=title, ylabel="p95 time to first token (ms)", yscale="log")
        ax.tick_params(axis="x", rotation=20)
    figure.suptitle(f"SIMULATED, profile {profile}: 100 replicas x 10,000 adapters")
    figure.tight_layout()
    figure.savefig(directory / "route-sim-cases.png", dpi=110)
    print(f"plots in {directory}/route-sim-scaling.png and route-sim-cases.png")


if __name__ == "__main__":
    main()
