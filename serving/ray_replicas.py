"""vLLM replicas on a Ray cluster (TUNESERVE_SERVING=ray).

Each replica is a detached Ray actor holding the GPU its vLLM runs on (`num_gpus`); Ray
restarts an actor whose process dies (`max_restarts=-1`), and inside it the same supervisor as
the API node's own engine restarts a vLLM that dies or stops answering. A replica listens on
its node's address with a key made at each start (required on every route, not only vLLM's
`/v1`: serving/replica_auth.py), checks that the port it reaches is its own
vLLM's, and announces itself in the DB (`serving_replicas`) with every health check it passes:
that is how every API node finds it, with no Ray driver in the API.

A controller, run as one Ray job (`python -m serving.ray_replicas`, submitted by the API
nodes under one id, so only one runs), keeps each base model between its min and max
replicas: one more while its replicas have requests waiting, one fewer once they all idle."""

import asyncio
import contextlib
import heapq
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from serving.engine import EngineUnavailable, VLLMEngine
from serving.engine_metrics import EngineLoad, parse_engine_load
from serving.settings import ServedModel, ServingSettings
from storage.base_models import base_models
from storage.models import ServingReplica

log = logging.getLogger("tuneserve.replicas")

NAMESPACE = "tuneserve"
# Seconds between two looks of the controller at its replicas.
CONTROLLER_INTERVAL = 2.0
# Looks in a row with requests waiting before a replica is added (not for one burst).
SCALE_UP_LOOKS = 2
# At most this many of the adapters in a replica's disk cache (the newest first: a node's
# cache holds ~1,000 adapters of an 8B base, 40 GB), and of those its vLLM has registered, are
# announced with each beat: enough for the router's tiers, bounded for the DB row.
ANNOUNCED_LIMIT = 1000


# vLLM adds each middleware outside the ones before it: the key is checked first, on every
# route; then adapters are fetched from the blob store.
REPLICA_VLLM_ARGS = ["--middleware", "serving.node_adapters.BlobAdapters",
                     "--middleware", "serving.replica_auth.RequireKey"]


def replica_name(base: str, index: int) -> str:
    return f"tuneserve-vllm-{re.sub(r'[^A-Za-z0-9_.-]', '-', base)}-{index}"


class ReplicaHost:
    """What runs inside a replica's actor: its vLLM, supervised on an event loop of its own,
    and its beat in the DB."""

    def __init__(self, name: str, base: str) -> None:
        import ray

        settings = ServingSettings()
        # Its own log and adapter cache on the node, apart from other replicas there.
        settings.data_dir = settings.data_dir / "replicas" / name
        settings.adapter_cache_dir = settings.data_dir / "adapter-cache"
        settings.prepare_data_dir()
        self.settings = settings
        self.name = name
        self.db = settings.open_database()
        # Unique across this replica's restarts, so API nodes see each start as new.
        self.started = time.time_ns() // 1_000_000
        self.beats = 0
        self.loop = asyncio.new_event_loop()
        self.engine = VLLMEngine(
            settings, base_models(settings)[base],
            # Ray leaves get_node_ip_address unannotated.
            host=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            name=name, on_healthy=self._beat,
            extra_args=REPLICA_VLLM_ARGS,
            # What that middleware reads: adapters go to this replica's own cache.
            extra_env={"TUNESERVE_DATA_DIR": str(settings.data_dir),
                       "TUNESERVE_ADAPTER_CACHE_DIR": str(settings.adapter_cache_dir)})
        threading.Thread(target=self._run, name="vllm-supervisor", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.engine.start())
        self.loop.run_forever()

    async def _beat(self) -> None:
        self.beats += 1
        registered = await self._registered()
        await asyncio.to_thread(self._write_beat, registered)

    async def _registered(self) -> list[str] | None:
        """The adapters its vLLM has registered, whichever API node loaded them (None when
        it did not answer: the last announcement stands)."""
        try:
            response = await self.engine.http.get("/v1/models", timeout=3)
            cards = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return [str(card["id"]) for card in cards if card.get("parent")][:ANNOUNCED_LIMIT]

    def _write_beat(self, registered: list[str] | None) -> None:
        e = self.engine
        with self.db.session() as s:
            row = s.get(ServingReplica, self.name) or ServingReplica(name=self.name)
            row.base_model, row.url, row.api_key = e.base, e.url, e.api_key
            row.generation = self.started * 1000 + e.generation
            row.beats, row.adapter_slots = self.beats, self.settings.max_loaded_adapters
            row.disk_adapters = cached_adapters(self.settings.adapter_cache_dir)
            if registered is not None:
                row.host_adapters = registered
            s.merge(row)
            s.commit()

    def load(self) -> dict[str, int]:
        """Its vLLM's running and waiting requests (both -1 while it is not answering)."""
        future = asyncio.run_coroutine_threadsafe(self._load(), self.loop)
        try:
            load = future.result(timeout=5)
        except (EngineUnavailable, TimeoutError, OSError):
            return {"running": -1, "waiting": -1}
        return {"running": load.running, "waiting": load.waiting}

    async def _load(self) -> EngineLoad:
        if not self.engine.ready.is_set():
            raise EngineUnavailable
        return parse_engine_load((await self.engine.http.get("/metrics", timeout=3)).text)


def cached_adapters(cache_dir: Path | None, limit: int = ANNOUNCED_LIMIT) -> list[str]:
    """The adapters in a node's adapter cache (`serving.adapter_cache`: one directory each,
    fetches in progress under dot names), the newest `limit` first."""
    entries: list[tuple[float, str]] = []
    if cache_dir is None or not cache_dir.is_dir():  # nothing fetched yet
        return []
    for entry in os.scandir(cache_dir):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        with contextlib.suppress(FileNotFoundError):  # evicted just now
            entries.append((entry.stat().st_mtime, entry.name))
    return [name for _, name in heapq.nlargest(limit, entries)]


def replica_actor() -> Any:
    import ray

    # Ray's overloads of remote() describe task options only; actors take max_concurrency.
    return ray.remote(  # type: ignore[call-overload]
        max_restarts=-1, max_task_retries=-1, max_concurrency=4)(ReplicaHost)


class Controller:
    """Keeps each served base between its min and max replicas."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.actor = replica_actor()
        self._waiting_looks: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}

    def _handles(self, group: ServedModel) -> dict[int, Any]:
        import ray

        found = {}
        for index in range(group.max_replicas):
            with contextlib.suppress(ValueError):  # no such actor
                found[index] = ray.get_actor(replica_name(group.model, index),
                                             namespace=NAMESPACE)
        return found

    def _loads(self, handles: dict[int, Any]) -> list[dict[str, int]]:
        import ray

        try:
            return list(ray.get([h.load.remote() for h in handles.values()], timeout=10))
        except (ray.exceptions.RayError, TimeoutError):
            return []

    def wanted(self, group: ServedModel, have: int, loads: list[dict[str, int]]) -> int:
        """How many replicas the base should have now (pure but for the clock)."""
        want = max(group.min_replicas, min(have, group.max_replicas))
        live = [load for load in loads if load["running"] >= 0]
        if not live:
            return want
        waiting = sum(load["waiting"] for load in live) / len(live)
        busy = waiting >= self.settings.replica_scale_up_waiting
        looks = self._waiting_looks.get(group.model, 0) + 1 if busy else 0
        self._waiting_looks[group.model] = looks
        if looks >= SCALE_UP_LOOKS and want < group.max_replicas:
            self._waiting_looks[group.model] = 0
            return want + 1
        if any(load["running"] or load["waiting"] for load in live):
            self._idle_since.pop(group.model, None)
            return want
        idle_since = self._idle_since.setdefault(group.model, time.monotonic())
        if (time.monotonic() - idle_since >= self.settings.replica_scale_down_idle_seconds
                and want > group.min_replicas):
            self._idle_since.pop(group.model, None)
            return want - 1
        return want

    def reconcile(self, group: ServedModel) -> None:
        import ray

        handles = self._handles(group)
        want = self.wanted(group, len(handles), self._loads(handles))
        for index in range(group.max_replicas):
            name = replica_name(group.model, index)
            if index < want and index not in handles:
                log.info("starting replica %s", name)
                self.actor.options(
                    name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                    num_gpus=self.settings.ray_gpus_per_replica,
                    resources=self.settings.ray_replica_resource_map() or {},
                ).remote(name, group.model)
            elif index >= want and index in handles:
                log.info("stopping replica %s", name)
                ray.kill(handles[index], no_restart=True)

    def run(self) -> None:
        while True:
            for group in self.settings.served_model_groups():
                try:
                    self.reconcile(group)
                except Exception:  # the next look tries again; the controller must not die
                    log.exception("reconciling replicas of %s", group.model)
            time.sleep(CONTROLLER_INTERVAL)


def main() -> None:
    import ray

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ray.init(namespace=NAMESPACE)  # inside a Ray job: the job's own cluster
    Controller(ServingSettings()).run()


if __name__ == "__main__":
    main()
