"""Sweeps away blobs no live row accounts for: what a crash between writing a blob and
writing its row (or between deleting a row and its blobs) left behind.

Every blob is written before the row that names it, so a blob younger than the grace period
may simply be waiting for its row (a final adapter waits through its job's evaluation); only
older ones are taken. What counts as live, per top-level prefix of `storage/keys.py`:

- `files/{project}/{file}`: the file's row exists;
- `uploads/{project}/{upload}/…`: the upload is still pending;
- `jobs/{project}/{job}/…` (resumable training state): the job is not finished;
- `adapters/{project}/{model key}/…`: a model (or checkpoint) row names that prefix, or its
  job is still active (its checkpoints are written before their rows); the key begins with
  the job's id (`training/jobs.py`);
- `tinker/{project}/{checkpoint}/…` (a Tinker run's saved weights): its checkpoint row
  exists (the trainer uploads before it writes the row)."""

import logging
import time

from sqlalchemy import select

from storage.blob import BlobStore
from storage.db import Database
from storage.keys import adapter_prefix
from storage.models import File, FineTunedModel, FineTuningJob, TinkerCheckpoint, Upload
from training.jobs import ACTIVE, adapter_keys_start

log = logging.getLogger("tuneserve.api")


def _grouped(store: BlobStore, top: str,
             older_than: float) -> dict[str, tuple[list[str], bool]]:
    """Keys under `top`, by object (`top/{project}/{id}`): (its keys, all older than)."""
    groups: dict[str, tuple[list[str], bool]] = {}
    for key, modified in store.list_objects(top + "/"):
        parts = key.split("/")
        if len(parts) < 3:
            continue  # not of the layout: not ours to judge
        name = "/".join(parts[:3])
        keys, old = groups.get(name, ([], True))
        groups[name] = (keys + [key], old and modified < older_than)
    return groups


def _legacy_keys_start(model_name: str) -> str:
    """How the adapter folders of a model named `ft:{base}:{project}:{suffix}:{short id}`
    began before folders were named after job ids. With a `:` in the base or project name
    this is not its short id but some other part of the name: a wider match, which keeps
    more and never less."""
    parts = model_name.split(":")
    return (parts[4] if len(parts) > 4 else model_name) + "-"


def sweep_orphans(db: Database, store: BlobStore, grace_seconds: float,
                  now: float | None = None) -> list[str]:
    """Deletes orphaned blobs older than the grace period; returns their keys."""
    older_than = (now or time.time()) - grace_seconds
    files, uploads, states, adapters, tinker = (
        _grouped(store, top, older_than)
        for top in ("files", "uploads", "jobs", "adapters", "tinker"))
    with db.session() as s:
        live_files = set(s.scalars(select(File.id)))
        pending = set(s.scalars(select(Upload.id).where(Upload.status == "pending")))
        active = list(s.execute(select(FineTuningJob.id, FineTuningJob.project_id,
                                       FineTuningJob.model_name)
                                .where(FineTuningJob.status.in_(ACTIVE))))
        prefixes = {p.rstrip("/") for p in s.scalars(select(FineTunedModel.adapter_prefix))}
        saved = {p.rstrip("/") for p in s.scalars(select(TinkerCheckpoint.blob_prefix))}
    active_jobs = {job_id for job_id, _, _ in active}
    # An active job's adapters are named after its id (`training/jobs.py`), or, where a worker
    # of an older release still runs it, after its model's short id: only ever a reason to keep.
    active_adapters = tuple(
        adapter_prefix(project_id, start).rstrip("/") for job_id, project_id, name in active
        for start in (adapter_keys_start(job_id), _legacy_keys_start(name)))

    def live_adapter(group: str) -> bool:
        return group in prefixes or group.startswith(active_adapters)

    doomed: list[str] = []
    for groups, live in ((files, lambda g: g.rsplit("/", 1)[1] in live_files),
                         (uploads, lambda g: g.rsplit("/", 1)[1] in pending),
                         (states, lambda g: g.rsplit("/", 1)[1] in active_jobs),
                         (adapters, live_adapter),
                         (tinker, lambda g: g in saved)):
        for group, (keys, old) in groups.items():
            if old and not live(group):
                doomed += keys
    for key in doomed:
        store.delete(key)
    partials = store.remove_stale_partials(older_than)
    if doomed or partials:
        log.info("removed %d orphaned blobs and %d unfinished writes", len(doomed), partials)
    return doomed
