"""`GET /v1/fine_tuning/jobs/{id}/events?stream=true`: a job's events as server-sent events,
oldest first, for the dashboard and `tuneserve jobs follow` (an extension beside OpenAI's
list, which is newest first and polled).

Each event is `id: <event id>` + `data: <the list's event object>`; a client that lost the
connection resumes with `after` or `Last-Event-ID`. When the job is terminal and every
event was sent, `event: done` carries the job object and the stream ends. Rows are read
in short transactions on a timer, so a stream holds no DB connection while it waits.

Streams cost a poll each, so one tenant's are bounded: a project has at most so many open on
a node (`StreamSlots`, 429 beyond), and the stream of a paused job, which may wait for days,
ends once it has been idle a while (the dashboard and `jobs follow` reconnect after the last
event, as after any lost stream)."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.fine_tuning.jobs.schemas import FineTuningJobEventObject, FineTuningJobObject
from storage.db import Database
from storage.models import JobEvent
from training import jobs

POLL_SECONDS = 0.5
# A comment line now and then, so proxies and clients see a live connection.
PING_SECONDS = 15.0
_BATCH = 200


def _sse(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    head = (f"id: {event_id}\n" if event_id else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n".encode()


def start_seq(db: Database, job_id: str, after: str | None) -> int:
    """The sequence number the stream starts after (0: from the first event)."""
    if not after:
        return 0
    with db.session() as s:
        seq = s.scalar(select(JobEvent.seq).where(JobEvent.job_id == job_id,
                                                  JobEvent.id == after))
    return seq or 0


class StreamSlots:
    """The event streams open on this node, per project: at most `limit` each (0: no
    limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def take(self, project_id: str) -> bool:
        """One more for the project, if it may have it (give it back with `give_back`)."""
        if self.limit and self._open[project_id] >= self.limit:
            return False
        self._open[project_id] += 1
        return True

    def give_back(self, project_id: str) -> None:
        self._open[project_id] -= 1
        if self._open[project_id] <= 0:
            del self._open[project_id]


def _poll(db: Database, job_id: str,
          seq: int) -> tuple[list[JobEvent], FineTuningJobObject | None, str | None]:
    """Events after `seq`, the job when it is terminal (read first: no event of a terminal
    job can come after it, so none is missed), and the job's status (None: it is gone)."""
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        if job is None:
            return [], None, None
        done = FineTuningJobObject.of(job) if job and job.status in jobs.TERMINAL else None
        status = job.status
        rows = list(s.scalars(select(JobEvent)
                              .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
                              .order_by(JobEvent.seq).limit(_BATCH)))
        s.expunge_all()
    if len(rows) == _BATCH:
        done = None  # more to send first
    return rows, done, status


async def event_stream(db: Database, job_id: str, seq: int,
                       paused_idle_seconds: float) -> AsyncIterator[bytes]:
    pinged = last_event = time.monotonic()
    while True:
        rows, done, status = await run_in_threadpool(_poll, db, job_id, seq)
        if status is None:
            return
        for row in rows:
            yield _sse(FineTuningJobEventObject.of(row).model_dump_json(), event_id=row.id)
            seq = row.seq
            last_event = time.monotonic()
        if done is not None:
            yield _sse(done.model_dump_json(), event="done")
            return
        if status == jobs.JobStatus.PAUSED and \
                time.monotonic() - last_event > paused_idle_seconds:
            return
        if time.monotonic() - pinged > PING_SECONDS:
            pinged = time.monotonic()
            yield b": ping\n\n"
        await asyncio.sleep(POLL_SECONDS)


async def held_stream(slots: StreamSlots, project_id: str,
                      stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`stream`, holding the project's slot until it ends or its client goes."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        slots.give_back(project_id)
