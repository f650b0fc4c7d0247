"""Sweeps away expired files, uploads, stored responses and Tinker checkpoints (their
`ttl_seconds`), so their bytes do not linger in storage; answers the Tinker samples an API
node took and never answered (it stopped mid-sample)."""

import asyncio
import logging
import time

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.background.orphans import sweep_orphans
from api.quotas import forget_old_windows
from api.settings import Settings
from storage.blob import BlobStore
from storage.db import Database
from storage.keys import file_key, upload_prefix
from storage.logs import remove_old
from storage.models import File, StoredResponse, TinkerCheckpoint, Upload
from storage.tombstones import forget_old
from storage.uploads import UploadStatus, finish
from training.tinker import futures

log = logging.getLogger("tuneserve.api")


# A sample's node answers it within the engine's read timeout (or fails it): past that and
# this margin (adapter fetch and load, a retry), nobody is working on it.
SAMPLE_MARGIN_SECONDS = 120


def sample_deadline(settings: Settings) -> int:
    return int(settings.engine_read_timeout) + SAMPLE_MARGIN_SECONDS


def reap_expired(db: Database, store: BlobStore, batch: int = 500,
                 response_retention_seconds: int = 0, sample_deadline_seconds: int = 0) -> int:
    """Deletes expired files and stored responses, expires stale uploads, fails Tinker
    samples whose node stopped; returns how many objects went. `response_retention_seconds`:
    0 keeps stored responses; `sample_deadline_seconds`: 0 fails no sample."""
    now = int(time.time())
    if sample_deadline_seconds:
        with db.session() as session:
            futures.fail_abandoned_samples(session, now - sample_deadline_seconds, batch)
    with db.session() as session:
        responses = (_old_responses(session, now - response_retention_seconds, batch)
                     if response_retention_seconds else [])
        if responses:
            session.execute(delete(StoredResponse).where(StoredResponse.seq.in_(responses)))
        files = list(session.scalars(
            select(File).where(File.expires_at.is_not(None), File.expires_at <= now).limit(batch)
        ))
        for row in files:
            session.delete(row)
        uploads = list(session.scalars(
            select(Upload).where(Upload.status == UploadStatus.PENDING, Upload.expires_at <= now)
            .limit(batch)
        ))
        # Only those still pending: one completed or cancelled meanwhile keeps its state.
        expired = set(finish(session, [u.id for u in uploads], UploadStatus.EXPIRED, now=now)
                      if uploads else ())
        uploads = [u for u in uploads if u.id in expired]
        checkpoints = list(session.scalars(
            select(TinkerCheckpoint).where(TinkerCheckpoint.expires_at.is_not(None),
                                           TinkerCheckpoint.expires_at <= now).limit(batch)))
        for checkpoint in checkpoints:
            session.delete(checkpoint)
        forget_old_windows(session, now)
        forget_old(session, now)
    for checkpoint in checkpoints:
        store.delete_prefix(checkpoint.blob_prefix)
    for row in files:
        store.delete(file_key(row.project_id, row.id))
    for upload in uploads:
        store.delete_prefix(upload_prefix(upload.project_id, upload.id))
    return len(files) + len(uploads) + len(responses) + len(checkpoints)


def _old_responses(session: Session, cutoff: int, batch: int) -> list[int]:
    """The stored responses created by `cutoff`, among the `batch` oldest: they are stored in
    the order of their `seq`, so the primary key finds them without scanning the table."""
    oldest = session.execute(select(StoredResponse.seq, StoredResponse.created_at)
                             .order_by(StoredResponse.seq).limit(batch)).all()
    return [seq for seq, created_at in oldest if created_at <= cutoff]


async def run_reaper(db: Database, store: BlobStore, settings: Settings) -> None:
    swept = 0.0
    while True:
        try:
            if time.monotonic() - swept > settings.orphan_sweep_interval_seconds:
                swept = time.monotonic()
                await run_in_threadpool(remove_old, settings.data_dir.resolve() / "logs",
                                        settings.log_retention_days * 86400)
                await run_in_threadpool(sweep_orphans, db, store,
                                        settings.orphan_grace_seconds)
            if await run_in_threadpool(reap_expired, db, store, 500,
                                       settings.response_retention_days * 86400,
                                       sample_deadline(settings)):
                continue
        except Exception:
            log.exception("reaping expired objects failed; trying again later")
        await asyncio.sleep(settings.reaper_interval_seconds)
