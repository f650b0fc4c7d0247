"""The replica choice, as a table: the replicas' state in, the decision out."""

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
