"""`GET /ready`: this node's dependencies, each asked once with a bound on its time."""

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import text

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


def _engine(app: FastAPI) -> State:
    replicas = getattr(app.state, "replicas", None)
    if replicas is not None:
        return "ok" if any(r.ready.is_set() for r in replicas.replicas.values()) else "starting"
    engine = getattr(app.state, "engine", None)
    if engine is None:
        return "off"
    return "ok" if engine.ready.is_set() else "starting"


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

    async def run(self, app: FastAPI) -> dict[str, State]:
        async with self._lock:  # asked meanwhile: wait for the running checks, then share
            if self._states is None or time.monotonic() - self._at > CHECKS_SECONDS:
                self._states = await _dependencies(app)
                self._at = time.monotonic()
            database_state, storage_state = self._states
        return {"database": database_state, "storage": storage_state, "engine": _engine(app)}


async def _dependencies(app: FastAPI) -> tuple[State, State]:
    db, store = app.state.db, app.state.store

    def database() -> None:
        with db.sessions() as s:
            s.execute(text("SELECT 1"))

    # A key that never exists: a HEAD that proves the store answers.
    database_state, storage_state = await asyncio.gather(
        _bounded(database), _bounded(lambda: store.exists(".ready-probe")))
    return database_state, storage_state
