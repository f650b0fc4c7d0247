"""The cluster's replicas as an API node sees them (TUNESERVE_SERVING=ray): read from their
announcements in the DB, routed to while their beat moves, dropped when it stops.

The API node submits the replicas' controller as a Ray job under one id made from the served
models, so of several API nodes only one submission takes, and submits it again if it ended."""

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import Any

import httpx
from sqlalchemy import select

from serving.adapters import AdapterManager
from serving.engine import EngineUnavailable
from serving.settings import ServingSettings
from storage.db import Database
from storage.models import ServingReplica

log = logging.getLogger("tuneserve.replicas")

# Seconds between two reads of the replicas' announcements, and between two checks that
# their controller still runs.
DIRECTORY_INTERVAL = 0.5
CONTROLLER_CHECK_INTERVAL = 30.0
# An announcement silent for this many heartbeat timeouts is deleted: that replica is gone.
FORGET_AFTER_TIMEOUTS = 12


class RemoteReplica:
    """A vLLM replica on the cluster, behind the same interface as the local engine."""

    fetches_adapters = True

    def __init__(self, row: ServingReplica, settings: ServingSettings) -> None:
        self.name = row.name
        self.base = row.base_model
        self.settings = settings
        self.ready = asyncio.Event()
        self.generation = -1
        self.api_key = ""
        self.url = ""
        self.http = httpx.AsyncClient()
        # Its latest beat, and the one seen when a request could not reach it: it is ready
        # again only after a newer one.
        self.beats = row.beats
        self.unreachable_at: int | None = None
        # When a request last got an answer from it: a replica too busy to pass its health
        # checks in time is still alive (as the local engine's supervisor counts it).
        self.last_answer = 0.0
        self.update(row)

    def update(self, row: ServingReplica) -> None:
        self.disk = frozenset(row.disk_adapters or ())
        self.announced = frozenset(row.host_adapters or ())
        if (row.generation, row.url, row.api_key) == (self.generation, self.url, self.api_key):
            return
        # A new start of the replica: new process, address and key; it knows no adapter.
        old = self.http
        self.generation, self.url, self.api_key = row.generation, row.url, row.api_key
        self.http = httpx.AsyncClient(
            base_url=row.url, headers={"authorization": f"Bearer {row.api_key}"},
            timeout=httpx.Timeout(None, connect=5, read=self.settings.engine_read_timeout),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256))
        self.unreachable_at = None
        asyncio.get_running_loop().create_task(old.aclose())

    async def wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.engine_wait_seconds)
        except TimeoutError:
            raise EngineUnavailable from None

    def mark_unreachable(self) -> None:
        # Nothing more is sent to it until it beats again (or the directory drops it).
        self.ready.clear()
        self.unreachable_at = self.beats

    def note_answer(self) -> None:
        self.last_answer = time.monotonic()


class ReplicaDirectory:
    """Keeps the adapter manager's replica groups equal to the live announcements."""

    def __init__(self, settings: ServingSettings, db: Database, adapters: AdapterManager) -> None:
        self.settings = settings
        self.db = db
        self.adapters = adapters
        self.replicas: dict[str, RemoteReplica] = {}
        # name -> (beats, when they last moved; None until they have moved once under watch)
        self._seen: dict[str, tuple[int, float | None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        checked = 0.0
        while True:
            try:
                if time.monotonic() - checked > CONTROLLER_CHECK_INTERVAL:
                    checked = time.monotonic()
                    await asyncio.to_thread(ensure_controller, self.settings)
                await self.refresh()
            except Exception:  # a DB or Ray blip; the next look tries again
                log.exception("reading the serving replicas")
            await asyncio.sleep(DIRECTORY_INTERVAL)

    async def refresh(self) -> None:
        rows = await asyncio.to_thread(self._rows)
        now = time.monotonic()
        timeout = self.settings.replica_heartbeat_timeout
        stale: set[str] = set()
        for row in rows:
            beats, moved = self._seen.get(row.name, (row.beats, None))
            if row.beats != beats:
                moved = now
            self._seen[row.name] = (row.beats, moved)
            replica = self.replicas.get(row.name)
            alive = moved is not None and (now - moved < timeout or (
                replica is not None and replica.unreachable_at is None
                and now - replica.last_answer < timeout))
            if alive:
                if replica is None:
                    replica = self.replicas[row.name] = RemoteReplica(row, self.settings)
                    self.adapters.add_replica(replica)
                    log.info("replica %s of %s at %s", row.name, row.base_model, row.url)
                replica.update(row)
                replica.beats = row.beats
                if replica.unreachable_at is None or row.beats > replica.unreachable_at + 1:
                    replica.unreachable_at = None
                    replica.ready.set()
            else:
                if replica is not None:
                    self._drop(row.name)
                if moved is not None and now - moved > FORGET_AFTER_TIMEOUTS * timeout:
                    stale.add(row.name)
        for name in set(self.replicas) - {row.name for row in rows}:
            self._drop(name)
        if stale:
            await asyncio.to_thread(self._forget, stale)

    def _drop(self, name: str) -> None:
        replica = self.replicas.pop(name)
        replica.ready.clear()
        self.adapters.remove_replica(replica)
        log.warning("replica %s stopped beating; routing around it", name)

    def _rows(self) -> list[ServingReplica]:
        with self.db.session() as s:
            rows = list(s.scalars(select(ServingReplica)))
            s.expunge_all()
            return rows

    def _forget(self, names: set[str]) -> None:
        with self.db.session() as s:
            for row in s.scalars(select(ServingReplica).where(ServingReplica.name.in_(names))):
                s.delete(row)
            s.commit()
        for name in names:
            self._seen.pop(name, None)


def controller_job(settings: ServingSettings) -> dict[str, Any]:
    """The controller's Ray job (pure: unit-tested). Its id follows the served models and
    the replicas' shape, so a changed configuration starts a new controller."""
    env = {
        "TUNESERVE_SERVED_MODELS": json.dumps([g.__dict__ for g in
                                               settings.served_model_groups()]),
        "TUNESERVE_RAY_GPUS_PER_REPLICA": str(settings.ray_gpus_per_replica),
        "TUNESERVE_RAY_REPLICA_RESOURCES": settings.ray_replica_resources,
        "TUNESERVE_REPLICA_SCALE_UP_WAITING": str(settings.replica_scale_up_waiting),
        "TUNESERVE_REPLICA_SCALE_DOWN_IDLE_SECONDS":
            str(settings.replica_scale_down_idle_seconds),
        # The replicas' vLLM shape; storage and DB settings come from each node's environment.
        **{f"TUNESERVE_{name.upper()}": str(getattr(settings, name)) for name in (
            "max_loras", "max_cpu_loras", "max_lora_rank", "max_model_len", "kv_cache_gib",
            "gpu_memory_utilization", "max_loaded_adapters", "engine_startup_timeout",
            "engine_probe_timeout", "engine_probe_failures")},
    }
    digest = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:12]
    return {
        "entrypoint": settings.ray_serving_command,
        "submission_id": f"tuneserve-serving-{digest}",
        "entrypoint_num_cpus": 0,
        "runtime_env": {"env_vars": env},
        "metadata": {"tuneserve": "serving"},
    }


def ensure_controller(settings: ServingSettings) -> None:
    """Submits the controller unless it runs; stops controllers of an older configuration."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(settings.ray_address)
    job = controller_job(settings)
    ours = job["submission_id"]
    status = None
    for info in client.list_jobs():
        # Ours are all submitted with an id (jobs without one are drivers started by hand).
        if (info.metadata or {}).get("tuneserve") != "serving" or info.submission_id is None:
            continue
        if info.submission_id == ours:
            status = info.status
        elif not info.status.is_terminal():
            log.info("stopping the replicas' controller of an older configuration")
            client.stop_job(info.submission_id)
    if status in (JobStatus.PENDING, JobStatus.RUNNING):
        return
    if status is not None:
        client.delete_job(ours)
    try:
        client.submit_job(**job)
        log.info("submitted the replicas' controller %s", ours)
    except RuntimeError as exc:
        if "already exists" not in str(exc):  # another API node was first
            raise
