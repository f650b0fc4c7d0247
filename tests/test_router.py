"""The replica choice, as a table: the replicas' state in, the decision out."""

from collections import Counter

import pytest

from serving.router import Decision, ReplicaLoad, RoutingPolicy, choose

POLICY = RoutingPolicy(overload_waiting=2)


def replica(name: str, *adapters: str, running: int = 0, waiting: int = 0, slots: int = 2,
            pinned: int = 0) -> ReplicaLoad:
    return ReplicaLoad(name, running, waiting, frozenset(adapters), slots, pinned)


@pytest.mark.parametrize(("replicas", "adapter", "expected"), [
    # The holder wins even when busier than an empty replica.
    ([replica("a", "x", running=3), replica("b")], "x", Decision("a", "hit")),
    # Two holders: the less loaded one, so a spilled hot adapter spreads.
    ([replica("a", "x", running=3), replica("b", "x", running=1)], "x", Decision("b", "hit")),
    # An overloaded holder: one more replica loads it (spill), the one with a free slot.
    ([replica("a", "x", running=3, waiting=3), replica("b", "y", "z"), replica("c", "y")],
     "x", Decision("c", "spill")),
    # Nobody holds it: the least loaded replica with a free slot loads it.
    ([replica("a", "y", running=0), replica("b", running=2), replica("c", running=1)], "x",
     Decision("a", "load")),
    # No free slot anywhere and the holder is overloaded but still the least loaded: stay.
    ([replica("a", "x", "w", running=2, waiting=3), replica("b", "y", "z", running=6)], "x",
     Decision("a", "hit")),
    # No free slot anywhere, holder busier than a replica that can evict an idle adapter.
    ([replica("a", "x", "w", running=9, waiting=9), replica("b", "y", "z", running=1)], "x",
     Decision("b", "spill")),
    # No slot anywhere and every adapter in use: nothing can be evicted, the least loaded
    # takes it anyway (the adapter manager goes over its count rather than drop a request).
    ([replica("a", "y", "z", running=3, pinned=2), replica("b", "v", "w", running=1, pinned=2)],
     "x", Decision("b", "load")),
    # A replica whose adapters are all in use is passed over for one that can evict.
    ([replica("a", "y", "z", running=0, pinned=2), replica("b", "v", "w", running=1)], "x",
     Decision("b", "load")),
    # The base model: the least loaded; ties to the one holding fewer adapters.
    ([replica("a", "x", running=1), replica("b", running=1)], None, Decision("b", "base")),
    ([], "x", None),
])
def test_choice(replicas: list[ReplicaLoad], adapter: str | None,
                expected: Decision | None) -> None:
    assert choose(replicas, adapter, POLICY) == expected


def test_a_hot_adapter_spreads_then_its_requests_share_the_holders() -> None:
    """Requests for one adapter pile up on its replica; past the threshold it spills once, and
    from then on both holders take its requests by load."""
    state = {"a": replica("a", "x"), "b": replica("b")}
    picks = []
    for _ in range(12):
        decision = choose(list(state.values()), "x", POLICY)
        assert decision is not None
        picks.append(decision.action)
        r = state[decision.replica]
        queued = r.load + 1
        state[r.name] = ReplicaLoad(r.name, min(queued, 1), max(queued - 1, 0),
                                    r.adapters | {"x"}, r.slots)
    assert picks.count("spill") == 1
    assert {"a", "b"} == {n for n, r in state.items() if "x" in r.adapters}
    assert abs(state["a"].load - state["b"].load) <= 1


def test_the_choice_does_not_depend_on_the_order_replicas_are_listed() -> None:
    replicas = [replica(n, running=1) for n in "dcba"]
    assert choose(replicas, "x", POLICY) == choose(replicas[::-1], "x", POLICY)


def test_the_baselines_route_as_their_names_say() -> None:
    from serving.router import choose_with

    replicas = [replica("a", "x", running=5), replica("b", running=0), replica("c", running=2)]
    assert [choose_with("round_robin", replicas, "x", t).replica for t in range(4)] == [
        "a", "b", "c", "a"]
    assert choose_with("least_loaded", replicas, "x", 0) == Decision("b", "load")
    homes = {choose_with("adapter_hash", replicas, f"ad{i}", 0).replica for i in range(30)}
    assert homes == {"a", "b", "c"}  # adapters spread over replicas, each with one home
    assert all(choose_with("adapter_hash", replicas[::-1], f"ad{i}", 9)
               == choose_with("adapter_hash", replicas, f"ad{i}", 0) for i in range(30))
    assert choose_with("affinity", replicas, "x", 0) == Decision("a", "hit")


# -- the consistent-hashing router --------------------------------------------------------

from serving.router import (  # noqa: E402
    TIER_COLD,
    TIER_DISK,
    TIER_GPU,
    TIER_HOST,
    ConsistentRouter,
    DemandTracker,
    HashingPolicy,
    HashRing,
    choose_consistent,
    home_count,
)

NAMES = [f"r{i:02d}" for i in range(20)]
ADAPTERS = [f"lora-{i}" for i in range(5000)]


def homes(ring: HashRing) -> dict[str, str]:
    return {a: ring.homes(a)[0] for a in ADAPTERS}


def test_a_replica_leaving_moves_only_its_own_adapters_about_one_in_n() -> None:
    before = homes(HashRing(NAMES))
    after = homes(HashRing(NAMES[:-1]))
    moved = {a for a in ADAPTERS if before[a] != after[a]}
    assert moved == {a for a in ADAPTERS if before[a] == NAMES[-1]}
    assert 0.5 / 20 <= len(moved) / len(ADAPTERS) <= 1.6 / 20


def test_a_replica_joining_takes_about_one_in_n_and_nothing_else_moves() -> None:
    before = homes(HashRing(NAMES))
    after = homes(HashRing([*NAMES, "r20"]))
    moved = {a for a in ADAPTERS if before[a] != after[a]}
    assert all(after[a] == "r20" for a in moved)
    assert 0.5 / 21 <= len(moved) / len(ADAPTERS) <= 1.6 / 21


def test_virtual_nodes_spread_adapters_evenly() -> None:
    counts = Counter(homes(HashRing(NAMES)).values())
    assert set(counts) == set(NAMES)
    assert max(counts.values()) <= 1.4 * len(ADAPTERS) / len(NAMES)


def test_the_ring_does_not_depend_on_the_order_replicas_are_listed() -> None:
    assert homes(HashRing(NAMES)) == homes(HashRing(NAMES[::-1]))


def fleet(*replicas: ReplicaLoad) -> dict[str, ReplicaLoad]:
    return {r.name: r for r in replicas}


def test_an_adapter_goes_to_its_home_and_stays_there_while_under_the_bound() -> None:
    ring = HashRing(NAMES[:4])
    home = ring.homes("x")[0]
    replicas = fleet(*(replica(n, running=2) for n in NAMES[:4]))
    assert choose_consistent(ring, replicas, "x", 0.0) == Decision(home, "load")
    replicas[home] = replica(home, "x", running=2)
    assert choose_consistent(ring, replicas, "x", 0.0) == Decision(home, "hit")


def test_an_overloaded_home_overflows_clockwise_to_the_same_next_replica() -> None:
    """Bounded loads: past c x the average, the next replica on the ring that is under it, so
    an overflowing adapter's requests land together rather than everywhere."""
    ring = HashRing(NAMES[:4])
    order = list(ring.walk("x"))
    replicas = fleet(*(replica(n, running=2) for n in NAMES[:4]))
    replicas[order[0]] = replica(order[0], "x", running=20)
    replicas[order[1]] = replica(order[1], running=20)  # 1.5 x (44 + 1) / 4: 17 at most
    for _ in range(3):
        assert choose_consistent(ring, replicas, "x", 0.0) == Decision(order[2], "spill")


def test_a_hot_adapter_is_replicated_in_proportion_to_its_demand() -> None:
    assert home_count(0.0001, 100) == 1
    assert home_count(0.1, 100) == 20  # 10 replicas' worth of traffic, 0.5 each
    assert home_count(0.9, 100) == 100
    ring = HashRing(NAMES)
    share = 0.25  # 5 replicas' worth of 20: 10 homes
    its_homes = ring.homes("hot", home_count(share, len(NAMES)))
    assert len(its_homes) == 10
    for prefetched in (False, True):
        state = fleet(*(replica(n, running=5) for n in NAMES))
        if prefetched:  # into its homes' host memory, as the simulator does
            state.update(fleet(*(replica(n, "hot", running=5) for n in its_homes)))
        picked: Counter[str] = Counter()
        for _ in range(40):
            decision = choose_consistent(ring, state, "hot", share)
            assert decision is not None
            picked[decision.replica] += 1
            r = state[decision.replica]
            state[r.name] = replica(r.name, "hot", running=r.running + 1)
        assert set(picked) <= set(its_homes)  # only its homes
        if prefetched:  # evenly over all of them
            assert set(picked) == set(its_homes)
            assert max(picked.values()) - min(picked.values()) <= 1
        else:  # one more home loads it when the queues differ by more than a load costs
            assert len(picked) > 1


def test_a_replica_holding_it_beats_a_cold_home_and_gpu_beats_host() -> None:
    ring = HashRing(NAMES[:4])
    order = list(ring.walk("x"))
    # A holder off its homes (an earlier overflow) at the same load: live affinity wins.
    replicas = fleet(*(replica(n, running=2) for n in NAMES[:4]))
    replicas[order[3]] = replica(order[3], "x", running=2)
    assert choose_consistent(ring, replicas, "x", 0.0) == Decision(order[3], "hit")
    # Two homes holding it, one in a GPU slot: that one, the other a copy away.
    share = 1.5 / 4  # three homes
    replicas[order[0]] = replica(order[0], "x", running=2)
    replicas[order[1]] = ReplicaLoad(order[1], 2, 0, frozenset({"x"}), 2, gpu=frozenset({"x"}))
    assert replicas[order[1]].tier("x") == TIER_GPU
    assert replicas[order[0]].tier("x") == TIER_HOST
    assert replicas[order[2]].tier("x") == TIER_COLD
    assert choose_consistent(ring, replicas, "x", share) == Decision(order[1], "hit")
    # ... unless it has a queue.
    replicas[order[1]] = ReplicaLoad(order[1], 2, 3, frozenset({"x"}), 2, gpu=frozenset({"x"}))
    assert choose_consistent(ring, replicas, "x", share) == Decision(order[0], "hit")


def test_an_adapter_held_nowhere_goes_to_the_home_with_it_on_disk() -> None:
    ring = HashRing(NAMES[:4])
    first, second = ring.homes("x", 2)
    replicas = fleet(*(replica(n, running=10) for n in NAMES[:4]))
    replicas[first] = replica(first)
    # The second home is busier, by more than a fetch's penalty, but has x in its node's
    # disk cache: a load from local disk beats a fetch from the blob store while the load
    # bound allows it.
    replicas[second] = ReplicaLoad(second, 9, 0, frozenset(), 2, disk=frozenset({"x"}))
    assert replicas[second].tier("x") == TIER_DISK
    assert choose_consistent(ring, replicas, "x", 0.0) == Decision(second, "load")
    # On disk is not held: with nothing in memory or on disk anywhere, the idle home.
    replicas[second] = replica(second, running=9)
    assert choose_consistent(ring, replicas, "x", 0.0) == Decision(first, "load")


def test_an_idle_fleet_keeps_an_adapter_s_burst_on_its_home() -> None:
    ring = HashRing(NAMES)
    replicas = fleet(*(replica(n) for n in NAMES))
    home = ring.homes("x")[0]
    for running in range(HashingPolicy().min_capacity):
        replicas[home] = replica(home, "x", running=running)
        assert choose_consistent(ring, replicas, "x", 0.0) == Decision(home, "hit")


def test_a_stale_total_falls_back_to_the_least_loaded() -> None:
    ring = HashRing(NAMES[:3])
    replicas = fleet(replica("r00", running=9), replica("r01", running=5),
                     replica("r02", running=7))
    assert choose_consistent(ring, replicas, "x", 0.0, total_load=0) == Decision("r01", "load")


def test_demand_decays_and_starts_small() -> None:
    demand = DemandTracker(half_life_s=10, floor=100)
    demand.record("x", 0.0)
    assert demand.share("x") == 1 / 100  # one request is not all of the demand
    for i in range(300):
        demand.record("x", i / 10)
    assert demand.share("x") > 0.99
    for i in range(300):
        demand.record("y", 30 + i / 10)
    assert demand.share("x") < 0.2 < 0.8 < demand.share("y")
    demand.record("z", 1e6)  # weights rescale rather than overflow
    assert 0 < demand.share("z") < 1


def test_the_api_s_router_keeps_a_ring_per_replica_set_and_sends_the_base_to_the_least_loaded(
) -> None:
    router = ConsistentRouter(HashingPolicy())
    replicas = [replica(n, running=i) for i, n in enumerate(NAMES[:3])]
    assert router.choose(replicas, None, 0.0) == Decision("r00", "base")
    first = router.choose(replicas, "x", 0.0)
    # x is held nowhere: the less loaded of its first two homes.
    two = HashRing(NAMES[:3]).homes("x", 2)
    assert first is not None and first.replica == min(two, key=NAMES.index)
    assert router.ring(NAMES[:3]) is router.ring(NAMES[2::-1])
    assert router.choose([], "x", 0.0) is None


def test_an_adapter_held_nowhere_goes_to_the_less_loaded_of_its_two_first_homes() -> None:
    ring = HashRing(NAMES[:4])
    for adapter in ADAPTERS[:20]:
        first, second = ring.homes(adapter, 2)
        # Busier, but well under the bound (4 here).
        busy = {r: replica(r, running=2 if r == first else 0) for r in NAMES[:4]}
        assert choose_consistent(ring, busy, adapter, 0.0).replica == second
        # Once held there it stays, though its first home is idle again.
        held = {r: replica(r, *([adapter] if r == second else []), slots=8) for r in NAMES[:4]}
        assert choose_consistent(ring, held, adapter, 0.0) == Decision(second, "hit")
        # Idle homes alike: the first.
        idle = {r: replica(r) for r in NAMES[:4]}
        assert choose_consistent(ring, idle, adapter, 0.0).replica == first
