"""Wakes the API node's `retrieve_future` long polls when their answers land.

A Tinker client pipelines: the cookbook's loops (and the SDK's users) submit a run's next
forward_backward and optim_step before the last ones are answered, and poll every pending
future at once. Each poll looking in the DB every 50 ms was 20 queries a second per future
(600 with 30 pending: a third of a core on a 2-core node, beside the trainer it slows).
Here one look per tick asks for every future this node is waiting on."""

import asyncio
import contextlib

import anyio
from sqlalchemy import select

from storage.db import Database
from storage.models import TinkerFuture
from training.tinker.futures import FutureStatus

# How often the one look runs while anyone waits: a result is seen this long after it lands.
TICK_SECONDS = 0.05


class AnswerWatch:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    async def answered(self, request_id: str, timeout: float) -> bool:
        """True once the request is answered (in any project: the caller checked whose it
        is), False after `timeout`."""
        event = asyncio.Event()
        self._waiting.setdefault(request_id, set()).add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            events = self._waiting.get(request_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[request_id]

    async def _watch(self) -> None:
        while self._waiting:
            try:
                done = await anyio.to_thread.run_sync(self._answered, list(self._waiting))
            except Exception:  # a DB hiccup: the next tick looks again
                done = set()
            for request_id in done:
                for event in self._waiting.get(request_id, ()):
                    event.set()
            await asyncio.sleep(TICK_SECONDS)

    def _answered(self, request_ids: list[str]) -> set[str]:
        with self._db.session() as s:
            return set(s.scalars(select(TinkerFuture.id).where(
                TinkerFuture.id.in_(request_ids), TinkerFuture.status != FutureStatus.PENDING)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
