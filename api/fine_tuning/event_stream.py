"""`GET /v1/fine_tuning/jobs/{id}/events?stream=true`: a job's events as server-sent events,
oldest first, for the dashboard and `tuneserve jobs follow` (an extension beside OpenAI's
list, which is newest first and polled).

Each event is `id: <event id>` + `data: <the list's event object>`; a client that lost the
connection resumes with `after` or `Last-Event-ID`. When the job is terminal and every
event was sent, `event: done` carries the job object and the stream ends. Rows are read
in short transactions on a timer, so a stream holds no DB connection while it waits."""

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.fine_tuning.schemas import FineTuningJobEventObject, FineTuningJobObject
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


def _poll(db: Database, job_id: str,
          seq: int) -> tuple[list[JobEvent], FineTuningJobObject | None, bool]:
    """Events after `seq`, the job when it is terminal (read first: no event of a terminal
    job can come after it, so none is missed), and whether the job is gone."""
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        if job is None:
            return [], None, True
        done = FineTuningJobObject.of(job) if job and job.status in jobs.TERMINAL else None
        rows = list(s.scalars(select(JobEvent)
                              .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
                              .order_by(JobEvent.seq).limit(_BATCH)))
        s.expunge_all()
    if len(rows) == _BATCH:
        done = None  # more to send first
    return rows, done, False


async def event_stream(db: Database, job_id: str, seq: int) -> AsyncIterator[bytes]:
    pinged = time.monotonic()
    while True:
        rows, done, gone = await run_in_threadpool(_poll, db, job_id, seq)
        if gone:
            return
        for row in rows:
            yield _sse(FineTuningJobEventObject.of(row).model_dump_json(), event_id=row.id)
            seq = row.seq
        if done is not None:
            yield _sse(done.model_dump_json(), event="done")
            return
        if time.monotonic() - pinged > PING_SECONDS:
            pinged = time.monotonic()
            yield b": ping\n\n"
        await asyncio.sleep(POLL_SECONDS)

