"""Keeps each replica's own load figures fresh while several share a base model: they see
the requests of every API node, not only this one's, and the router (`serving/router.py`,
a pure function of these figures) weighs them. The router stays free of I/O, so the same
code decides in the routing simulator (`bench/route_sim.py`)."""

import asyncio
import contextlib

import httpx

from serving.adapter_registry import ReplicaAdapters
from serving.engine_metrics import parse_engine_load


async def watch_loads(groups: dict[str, list[ReplicaAdapters]], interval: float) -> None:
    """Reads vLLM's /metrics of every ready replica of a shared base, every `interval`
    seconds, until cancelled."""
    while True:
        # Copies: replicas join and leave (other tasks) while a figure is awaited.
        for group in list(groups.values()):
            for replica in list(group) if len(group) > 1 else []:
                if not replica.engine.ready.is_set():
                    continue
                with contextlib.suppress(httpx.HTTPError, ValueError, IndexError):
                    answer = await replica.engine.http.get("/metrics", timeout=2)
                    load = parse_engine_load(answer.text)
                    replica.running, replica.waiting = load.running, load.waiting
                    replica.routed_since_read = 0
        await asyncio.sleep(interval)
