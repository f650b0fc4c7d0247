"""`GET /ready`: this node's dependencies, each asked once with a bound on its time."""

import asyncio
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


async def readiness(app: FastAPI) -> dict[str, State]:
    db, store = app.state.db, app.state.store

    def database() -> None:
        with db.sessions() as s:
            s.execute(text("SELECT 1"))

    # A key that never exists: a HEAD that proves the store answers.
    database_state, storage_state = await asyncio.gather(
        _bounded(database), _bounded(lambda: store.exists(".ready-probe")))
    return {"database": database_state, "storage": storage_state, "engine": _engine(app)}
