"""`GET /ready`: this node's dependencies, each asked once with a bound on its time."""

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import text

from api.services import Services, Serving
from storage.blob import BlobStore
from storage.db import Database

CHECK_SECONDS = 3.0

State = Literal["ok", "off", "starting", "unreachable"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, State]


async def _bounded(check: Callable[[], object]) -> State:
    try:
        await asyncio.wait_for(run_in_threadpool(check), CHECK_SECONDS)
    except Exception:  # noqa: BLE001 - any failure means not ready; /metrics counts outages
        return "unreachable"
    return "ok"


def _engine(serving: Serving | None) -> State:
    if serving is None:
        return "off"
    if serving.replicas is not None:
        ready = any(r.ready.is_set() for r in serving.replicas.replicas.values())
        return "ok" if ready else "starting"
    if serving.engine is None:
        return "off"
    return "ok" if serving.engine.ready.is_set() else "starting"


# /ready answers without a key (a load balancer has none): its database and blob store checks
# run at most this often however often it is asked; the engine's state is read each time.
CHECKS_SECONDS = 1.0


class ReadinessChecks:
    """The latest checks of the database and the blob store, shared by the requests that
    come within CHECKS_SECONDS of them."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._states: tuple[State, State] | None = None
        self._at = 0.0

    async def run(self, services: Services) -> dict[str, State]:
        async with self._lock:  # asked meanwhile: wait for the running checks, then share
            if self._states is None or time.monotonic() - self._at > CHECKS_SECONDS:
                self._states = await _dependencies(services.db, services.store)
                self._at = time.monotonic()
            database_state, storage_state = self._states
        return {"database": database_state, "storage": storage_state,
                "engine": _engine(services.serving)}


async def _dependencies(db: Database, store: BlobStore) -> tuple[State, State]:
    def database() -> None:
        with db.sessions() as s:
            s.execute(text("SELECT 1"))

    # A key that never exists: a HEAD that proves the store answers.
    database_state, storage_state = await asyncio.gather(
        _bounded(database), _bounded(lambda: store.exists(".ready-probe")))
    return database_state, storage_state
