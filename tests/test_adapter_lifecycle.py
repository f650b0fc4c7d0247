"""The adapter lifecycle's state machine, per replica: leases, eviction, failed loads,
restarts, and replicas shared by several API nodes. The engine here is a stand-in that
records what it is asked (real vLLM serves the same calls in tests/test_chat.py); the DB and
blob store are real."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from serving.adapter_cache import AdapterCache
from serving.adapter_registry import TRANSITIONS, AdapterState, Registration
from serving.adapters import (
    AdapterLoadError,
    AdapterManager,
    ModelNotFound,
    ModelNotServed,
    served_name,
)
from serving.engine import EngineUnavailable
from serving.router import TIER_COLD, TIER_DISK, TIER_GPU, TIER_HOST, HashRing
from serving.settings import ServingSettings
from storage.base_models import DEFAULT_BASE_MODEL
from storage.blob import LocalBlobStore
from storage.db import Database
from storage.models import FineTunedModel, Project
from storage.states import IllegalTransition

PROJECT = "proj_lifecycle"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StandInEngine:
    """Answers vLLM's adapter routes and records them; `refuse` names adapters it fails."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.base = DEFAULT_BASE_MODEL
        self.fetches_adapters = False
        # What a cluster replica announces in its beat (its node's disk cache, what its vLLM
        # has registered); a local engine announces nothing.
        self.disk: frozenset[str] = frozenset()
        self.announced: frozenset[str] = frozenset()
        self.generation = 1
        self.api_key = "key-" + name
        self.ready = asyncio.Event()
        self.ready.set()
        self.calls: list[tuple[str, str]] = []
        self.refuse: set[str] = set()
        self.running = 0  # what its /metrics says
        self.wait_seconds = 0.2
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer),
                                      base_url="http://vllm")

    def _answer(self, request: httpx.Request) -> httpx.Response:
        import json

        if request.url.path == "/v1/chat/completions":
            self.calls.append((request.url.path, ""))
            raise httpx.ReadTimeout("no answer in time", request=request)  # a busy engine
        if request.url.path == "/metrics":
            return httpx.Response(200, text=f"vllm:num_requests_running {self.running}\n"
                                            "vllm:num_requests_waiting 0\n")
        name = json.loads(request.content)["lora_name"]
        self.calls.append((request.url.path, name))
        if name in self.refuse:
            return httpx.Response(400, json={"error": {"message": "bad adapter", "code": 400}})
        return httpx.Response(200, text="ok")

    async def wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), self.wait_seconds)
        except TimeoutError:
            raise EngineUnavailable from None

    def mark_unreachable(self) -> None:
        self.ready.clear()

    def note_answer(self) -> None:
        pass

    def loaded(self) -> list[str]:
        return [n for path, n in self.calls if path == "/v1/load_lora_adapter"]

    def unloaded(self) -> list[str]:
        return [n for path, n in self.calls if path == "/v1/unload_lora_adapter"]


@pytest.fixture
def models(tmp_path: Path) -> tuple[Database, LocalBlobStore]:
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    store = LocalBlobStore(tmp_path / "blobs")
    with db.session() as s:
        s.add(Project(id=PROJECT, name="lifecycle", created_at=0))
        s.flush()
        for model in ("x", "y", "z", "w", "bad"):
            prefix = f"adapters/{model}/"
            store.put(prefix + "adapter_config.json", b"{}")
            store.put(prefix + "adapter_model.safetensors", b"0" * 1000)
            s.add(FineTunedModel(id=model, project_id=PROJECT, job_id="j", created_at=0,
                                 base_model=DEFAULT_BASE_MODEL, adapter_prefix=prefix))
        s.commit()
    return db, store


def manager(tmp_path: Path, models: tuple[Database, LocalBlobStore], *engines: StandInEngine,
            **settings: object) -> AdapterManager:
    db, store = models
    config = ServingSettings(**{"data_dir": tmp_path, "max_loaded_adapters": 2,  # type: ignore[arg-type]
                                "adapter_failure_ttl_seconds": 0.3, **settings})
    return AdapterManager(config, db, store, list(engines) or [StandInEngine()])


@pytest.mark.anyio
async def test_an_adapter_in_use_is_never_evicted(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    engine = StandInEngine()
    adapters = manager(tmp_path, models, engine)
    x = await adapters.acquire(PROJECT, "x")
    (await adapters.acquire(PROJECT, "y")).release()
    z = await adapters.acquire(PROJECT, "z")  # over two: the idle one goes, not x
    assert engine.unloaded() == [served_name("y")]
    w = await adapters.acquire(PROJECT, "w")  # x and z in use: over the count, nothing dropped
    assert engine.unloaded() == [served_name("y")]
    for lease in (x, z, w):
        lease.release()
    await asyncio.sleep(0.05)  # releases trim it back to two, oldest first
    assert engine.unloaded() == [served_name(m) for m in ("y", "x")]
    assert (await adapters.acquire(PROJECT, "w")).action == "hit"


@pytest.mark.anyio
async def test_a_failed_load_fails_fast_until_its_ttl(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    engine = StandInEngine()
    engine.refuse.add(served_name("bad"))
    adapters = manager(tmp_path, models, engine)
    for _ in range(3):
        with pytest.raises(AdapterLoadError):
            await adapters.acquire(PROJECT, "bad")
    assert engine.loaded() == [served_name("bad")]  # tried once, remembered
    [replica] = adapters.registry.groups[DEFAULT_BASE_MODEL]
    assert replica.adapters[served_name("bad")].state is AdapterState.FAILED
    time.sleep(0.35)
    engine.refuse.clear()
    (await adapters.acquire(PROJECT, "bad")).release()
    assert engine.loaded() == [served_name("bad")] * 2


@pytest.mark.anyio
async def test_a_failed_load_takes_no_slot(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    engine = StandInEngine()
    engine.refuse.add(served_name("bad"))
    adapters = manager(tmp_path, models, engine)  # two slots
    with pytest.raises(AdapterLoadError):
        await adapters.acquire(PROJECT, "bad")
    for model in ("x", "y"):
        (await adapters.acquire(PROJECT, model)).release()
    await asyncio.sleep(0.05)
    # Two adapters loaded in two slots: nothing was unloaded to make room for the failed one.
    assert engine.unloaded() == []
    assert (await adapters.acquire(PROJECT, "x")).action == "hit"


@pytest.mark.anyio
async def test_a_restarted_engine_gets_the_adapter_again(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    engine = StandInEngine()
    adapters = manager(tmp_path, models, engine)
    (await adapters.acquire(PROJECT, "x")).release()
    assert (await adapters.acquire(PROJECT, "x")).action == "hit"
    engine.generation += 1  # a new vLLM process: it knows no adapter
    lease = await adapters.acquire(PROJECT, "x")
    assert engine.loaded() == [served_name("x")] * 2
    await adapters.reload(lease)  # vLLM answered 404 for it: registered once more
    assert engine.loaded() == [served_name("x")] * 3


@pytest.mark.anyio
async def test_waiting_for_a_restarting_engine_is_bounded(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    engine = StandInEngine()
    engine.ready.clear()
    adapters = manager(tmp_path, models, engine)
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await adapters.acquire(PROJECT, "x")
    assert time.monotonic() - started < 2


@pytest.mark.anyio
async def test_another_project_s_model_is_not_found(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    adapters = manager(tmp_path, models)
    with pytest.raises(ModelNotFound):
        await adapters.acquire("proj_other", "x")


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["consistent", "affinity"])
async def test_an_adapter_s_requests_stay_on_the_replica_that_has_it(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     models, policy: str) -> None:
    a, b = StandInEngine("a"), StandInEngine("b")
    adapters = manager(tmp_path, models, a, b, routing_policy=policy)
    first = await adapters.acquire(PROJECT, "x")
    held = [await adapters.acquire(PROJECT, "x") for _ in range(3)]
    assert {lease.engine.name for lease in held} == {first.engine.name}
    other = await adapters.acquire(PROJECT, "y")  # the idle replica takes the new adapter
    assert other.engine.name != first.engine.name
    # Past the overload threshold (4 waiting), x spills onto the second replica too.
    more = [await adapters.acquire(PROJECT, "x") for _ in range(4)]
    assert "spill" in {lease.action for lease in more}
    assert {lease.engine.name for lease in more} == {"a", "b"}
    # Local replicas read the API node's disk cache, where x's first load left its files.
    assert adapters.decisions[(DEFAULT_BASE_MODEL, "spill", "disk")] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["consistent", "affinity"])
async def test_a_hot_adapter_is_prefetched_to_the_homes_its_demand_earns(  # type: ignore[no-untyped-def]
    tmp_path: Path, models, policy: str
) -> None:
    # Two replicas: an adapter drawing over a quarter of the requests earns a second home
    # (HashingPolicy.replica_share), which the consistent router loads ahead of any request.
    a, b = StandInEngine("a"), StandInEngine("b")
    adapters = manager(tmp_path, models, a, b, routing_policy=policy)
    home = HashRing("ab").homes(served_name("x"))[0] if policy == "consistent" else "a"
    other = b if home == "a" else a

    async def ask(times: int) -> None:
        for _ in range(times):
            lease = await adapters.acquire(PROJECT, "x")
            assert lease.engine.name == home
            lease.release()
        await asyncio.sleep(0.05)

    await ask(40)  # 40 of at least 256 (DemandTracker.floor): one home is enough
    assert other.loaded() == []
    await ask(40)
    prefetched = policy == "consistent"
    assert other.loaded() == [served_name("x")] * prefetched
    assert adapters.prefetches == prefetched
    assert adapters.decisions == {(DEFAULT_BASE_MODEL, "load", "cold"): 1,
                                  (DEFAULT_BASE_MODEL, "hit", "gpu"): 79}


@pytest.mark.anyio
async def test_a_failed_prefetch_takes_no_slot_and_requests_still_load(  # type: ignore[no-untyped-def]
    tmp_path: Path, models
) -> None:
    a, b = StandInEngine("a"), StandInEngine("b")
    adapters = manager(tmp_path, models, a, b, routing_policy="consistent")
    home = HashRing("ab").homes(served_name("x"))[0]
    other = b if home == "a" else a
    other.refuse.add(served_name("x"))
    for _ in range(80):
        (await adapters.acquire(PROJECT, "x")).release()
    await asyncio.sleep(0.05)
    assert other.loaded() == [served_name("x")] and adapters.prefetches == 0
    replica = next(r for r in adapters.registry.groups[DEFAULT_BASE_MODEL]
                   if r.engine is other)
    assert replica.slots_used() == 0


@pytest.mark.anyio
async def test_each_adapter_goes_to_its_home_on_the_ring_and_a_lost_replica_moves_only_its_own(  # type: ignore[no-untyped-def]
    tmp_path: Path, models
) -> None:
    engines = [StandInEngine(name) for name in "abcde"]
    adapters = manager(tmp_path, models, *engines, max_loaded_adapters=8)
    names = ("x", "y", "z", "w")

    async def placed() -> dict[str, str]:
        where = {}
        for model in names:
            lease = await adapters.acquire(PROJECT, model)
            where[model] = lease.engine.name
            lease.release()
        return where

    before = await placed()
    ring = HashRing("abcde")
    assert before == {m: ring.homes(served_name(m))[0] for m in names}
    assert await placed() == before  # and they stay
    lost = next(e for e in engines if e.name == before["x"])
    adapters.remove_replica(lost)
    after = await placed()
    assert {m for m in names if after[m] != before[m]} == {
        m for m in names if before[m] == lost.name}


@pytest.mark.anyio
async def test_the_router_sees_the_most_recently_used_adapters_in_gpu_slots(  # type: ignore[no-untyped-def]
    tmp_path: Path, models
) -> None:
    adapters = manager(tmp_path, models, max_loaded_adapters=4, max_loras=2)
    for model in ("x", "y", "z"):
        (await adapters.acquire(PROJECT, model)).release()
    view = adapters._view(adapters.registry.groups[DEFAULT_BASE_MODEL][0])
    assert view.adapters == {served_name(m) for m in ("x", "y", "z")}  # host memory
    assert view.gpu == {served_name(m) for m in ("y", "z")}
    assert (view.tier(served_name("z")), view.tier(served_name("x")),
            view.tier(served_name("w"))) == (TIER_GPU, TIER_HOST, TIER_COLD)


@pytest.mark.anyio
async def test_the_router_sees_an_evicted_adapter_on_disk(  # type: ignore[no-untyped-def]
    tmp_path: Path, models
) -> None:
    adapters = manager(tmp_path, models, max_loaded_adapters=2)
    for model in ("x", "y", "z"):
        (await adapters.acquire(PROJECT, model)).release()
    view = adapters._view(adapters.registry.groups[DEFAULT_BASE_MODEL][0])
    # x made room for z, and its files stay in the API node's cache, which this replica
    # reads: a load from disk, not a fetch.
    assert served_name("x") not in view.adapters
    assert (view.tier(served_name("x")), view.tier(served_name("w"))) == (TIER_DISK, TIER_COLD)


def test_the_disk_cache_never_deletes_a_registered_adapter(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    _, store = models
    registered = {"lora-x"}
    cache = AdapterCache(tmp_path / "cache", 2500, store, in_use=registered.__contains__)
    for name in ("x", "y", "z"):
        cache.path(f"lora-{name}", f"adapters/{name}/")
    kept = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert kept == ["lora-x", "lora-z"]  # y went; x, the oldest, is registered


@pytest.mark.anyio
async def test_a_lease_from_before_a_restart_still_releases_its_adapter(  # type: ignore[no-untyped-def]
    tmp_path: Path, models
) -> None:
    engine = StandInEngine()
    adapters = manager(tmp_path, models, engine)
    before = await adapters.acquire(PROJECT, "x")
    engine.generation += 1
    after = await adapters.acquire(PROJECT, "x")  # loaded again on the new process
    before.release()
    after.release()
    for model in ("y", "z"):  # x is idle now, so it can make room
        (await adapters.acquire(PROJECT, model)).release()
    assert served_name("x") in engine.unloaded()


@pytest.mark.anyio
async def test_replicas_that_join_later_are_routed_by_their_own_load(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     models) -> None:
    # As with Ray: the manager starts with no replica, they join as they beat, and their
    # figures (every API node's requests) are read all the same.
    db, store = models
    adapters = AdapterManager(ServingSettings(data_dir=tmp_path, routing_metrics_interval=0.05),
                              db, store, [])
    adapters.start()
    a, b = StandInEngine("a"), StandInEngine("b")
    for engine in (a, b):
        adapters.add_replica(engine)
    try:
        for busy, idle in ((a, b), (b, a)):
            busy.running, idle.running = 12, 0
            await asyncio.sleep(0.3)
            lease = await adapters.acquire(PROJECT, DEFAULT_BASE_MODEL)
            assert lease.engine.name == idle.name
            lease.release()
    finally:
        await adapters.close()


@pytest.mark.anyio
async def test_a_served_base_without_a_replica_now_is_unavailable_not_unserved(  # type: ignore[no-untyped-def]
        tmp_path: Path, models) -> None:
    # With Ray, a base's only replica restarting (or the first still starting) is a 503 to
    # retry; a base the deployment does not serve is a 400.
    db, store = models
    for served, expected in ((DEFAULT_BASE_MODEL, EngineUnavailable), ("other", ModelNotServed)):
        settings = ServingSettings(data_dir=tmp_path, serving="ray", ray_address="http://ray:8265",
                                   served_models=f'[{{"model": "{served}"}}]')
        adapters = AdapterManager(settings, db, store, [])
        for model in (DEFAULT_BASE_MODEL, "x"):  # the base, and a model fine-tuned from it
            with pytest.raises(expected):
                await adapters.acquire(PROJECT, model)


@pytest.mark.anyio
async def test_an_engine_that_answers_too_late_is_not_asked_again(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  models) -> None:
    # A read timeout is a busy engine, not a dead one: one generation, a 504, and the
    # replica stays in the rotation.
    from api.inference import _as_api_error
    from serving.engine import EngineTimeout
    from serving.proxy import Proxy
    from serving.send import send

    a, b = StandInEngine("a"), StandInEngine("b")
    adapters = manager(tmp_path, models, a, b)
    with pytest.raises(EngineTimeout) as late:
        await send(adapters, Proxy(), PROJECT, DEFAULT_BASE_MODEL, "/v1/chat/completions",
                   {"messages": []}, stream=False)
    asked = [e for e in (a, b) for path, _ in e.calls if path == "/v1/chat/completions"]
    assert len(asked) == 1 and a.ready.is_set() and b.ready.is_set()
    answer = _as_api_error(late.value, DEFAULT_BASE_MODEL)
    assert (answer.status, answer.code) == (504, "engine_timeout")


class _StallingBody(httpx.AsyncByteStream):
    """A stream's first event, then nothing in time."""

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'data: {"choices": []}\n\n'
        raise httpx.ReadTimeout("nothing more in time")


@pytest.mark.anyio
async def test_a_stream_that_stalls_says_so_and_keeps_the_engine(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                 models) -> None:
    from serving.proxy import Proxy, Stream

    engine = StandInEngine()
    engine.http = httpx.AsyncClient(base_url="http://vllm", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, stream=_StallingBody())))
    adapters = manager(tmp_path, models, engine)
    lease = await adapters.acquire(PROJECT, DEFAULT_BASE_MODEL)
    stream = await Proxy().stream("/v1/chat/completions", {"stream": True}, lease)
    assert isinstance(stream, Stream)
    events = [chunk async for chunk in stream.chunks]
    assert events[0] == b'data: {"choices": []}\n\n'
    assert b'"code": "engine_timeout"' in events[-1]
    assert engine.ready.is_set()  # busy, not gone: still in rotation
    lease.release()


@pytest.mark.parametrize("source", list(AdapterState))
def test_every_adapter_transition_is_allowed_or_refused_by_the_table(
        tmp_path: Path, models: tuple[Database, LocalBlobStore], source: AdapterState) -> None:
    registry = manager(tmp_path, models).registry
    for target in AdapterState:
        registration = Registration(source, generation=1)
        if target in TRANSITIONS[source]:
            registry._set_state(registration, target)
            assert registration.state is target
        else:
            with pytest.raises(IllegalTransition):
                registry._set_state(registration, target)
            assert registration.state is source


def test_unloaded_leads_nowhere_and_every_state_is_reachable() -> None:
    assert not TRANSITIONS[AdapterState.UNLOADED]
    reachable = {AdapterState.LOADING}  # a registration is born loading
    for _ in AdapterState:
        reachable |= {t for s in reachable for t in TRANSITIONS[s]}
    assert reachable == set(AdapterState)


class SharedReplica(StandInEngine):
    """One vLLM that several API nodes route to: it knows the adapters loaded into it, and
    answers 404 for a model it does not know, as vLLM does."""

    def __init__(self) -> None:
        super().__init__("shared")
        self.registered: set[str] = set()
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._serve),
                                      base_url="http://vllm")

    def _serve(self, request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content or b"{}")
        if request.url.path == "/v1/chat/completions":
            self.calls.append((request.url.path, body["model"]))
            if body["model"] not in self.registered:
                return httpx.Response(404, json={"error": {
                    "message": f"The model `{body['model']}` does not exist.", "code": 404}})
            return httpx.Response(200, json={"model": body["model"], "choices": []})
        name = body["lora_name"]
        self.calls.append((request.url.path, name))
        if request.url.path == "/v1/load_lora_adapter":
            self.registered.add(name)
        else:
            self.registered.discard(name)
        return httpx.Response(200, text="ok")


@pytest.mark.anyio
async def test_an_adapter_another_node_evicted_is_reloaded_on_404(  # type: ignore[no-untyped-def]
        tmp_path: Path, models) -> None:
    # The rule for a replica shared by API nodes (serving/adapter_registry.py): each node
    # keeps its own LRU and leases, so node A may evict what node B still uses; B's next
    # request meets a 404, loads the adapter again under its lease, and is answered.
    from serving.proxy import Answer, Proxy
    from serving.send import send

    replica = SharedReplica()
    node_a = manager(tmp_path / "a", models, replica)
    node_b = manager(tmp_path / "b", models, replica)
    x = served_name("x")
    (await node_b.acquire(PROJECT, "x")).release()  # B loaded x and will use it again
    for model in ("x", "y", "z"):  # A's own traffic: past its two slots, x is A's oldest
        (await node_a.acquire(PROJECT, model)).release()
    await asyncio.sleep(0.05)
    assert replica.unloaded() == [x] and x not in replica.registered
    assert node_b.registry.is_loaded(node_b.registry.groups[DEFAULT_BASE_MODEL][0], x)

    answer, lease = await send(node_b, Proxy(), PROJECT, "x", "/v1/chat/completions",
                               {"messages": []}, stream=False)
    lease.release()
    assert isinstance(answer, Answer) and answer.status == 200
    assert answer.body["model"] == "x"  # the tenant's name, not the served one
    asked = [name for path, name in replica.calls if path == "/v1/chat/completions"]
    assert asked == [x, x]  # a 404, then the same request after the reload
    assert replica.loaded().count(x) == 3  # by B, by A, and by B's reload


@pytest.mark.anyio
async def test_an_adapter_a_replica_announces_is_a_hit_with_no_load(  # type: ignore[no-untyped-def]
        tmp_path: Path, models) -> None:
    # Two cluster replicas; the one whose beat announces x registered (another API node
    # loaded it) takes x's request as a hit in host memory, and this node sends no load.
    a, b = StandInEngine("a"), StandInEngine("b")
    for engine in (a, b):
        engine.fetches_adapters = True
    x = served_name("x")
    holder = b if HashRing("ab").homes(x)[0] == "a" else a  # not x's first home
    holder.announced = frozenset({x})
    adapters = manager(tmp_path, models, a, b)
    lease = await adapters.acquire(PROJECT, "x")
    lease.release()
    assert (lease.engine.name, lease.action) == (holder.name, "hit")
    assert adapters.decisions[(DEFAULT_BASE_MODEL, "hit", "host")] == 1
    assert a.loaded() == b.loaded() == []
    # Should it have been unloaded since (a 404), the reload loads it for real.
    await adapters.reload(lease)
    assert holder.loaded() == [x]
