"""Blobs no live row accounts for are swept once past the grace period; everything a live
row, a pending upload or an active job still needs stays (each blob store, each DB)."""

import time

from api.background.orphans import sweep_orphans
from api.tenancy import get_or_create_project
from storage.blob import BlobStore, LocalBlobStore
from storage.db import Database
from storage.files import add_file
from storage.keys import (
    adapter_prefix,
    file_key,
    job_prefix,
    tinker_checkpoint_prefix,
    upload_part_key,
)
from storage.models import FineTunedModel, FineTuningJob, TinkerCheckpoint, Upload
from training.jobs import JobStatus

GRACE = 3600.0


def _job(project_id: str, job_id: str, status: str, short: str) -> FineTuningJob:
    return FineTuningJob(
        id=job_id, project_id=project_id, status=status, model="m", base_model="m",
        training_file="file-t", seed=1, created_at=0, result_files=[],
        method={"type": "supervised", "supervised": {"hyperparameters": {}}},
        model_name=f"ft:m:p::{short}")


def test_orphans_are_swept_after_the_grace_period(database: Database,
                                                 blob_store: BlobStore) -> None:
    with database.session() as s:
        p = get_or_create_project(s, "p").id
        add_file(s, file_id="file-kept", project_id=p, filename="f", purpose="batch", size=1)
        s.add_all([
            Upload(id="upload_open", project_id=p, filename="u", purpose="batch",
                   mime_type="text/plain", bytes=1, status="pending", created_at=0,
                   expires_at=2**40),
            Upload(id="upload_done", project_id=p, filename="u", purpose="batch",
                   mime_type="text/plain", bytes=1, status="completed", created_at=0,
                   expires_at=2**40),
            _job(p, "ftjob-running", JobStatus.RUNNING, "run1"),
            _job(p, "ftjob-failed", JobStatus.FAILED, "fail1"),
            _job(p, "ftjob-done", JobStatus.SUCCEEDED, "done1"),
        ])
        s.flush()
        s.add(FineTunedModel(id="ft:m:p::done1", project_id=p, job_id="ftjob-done",
                             base_model="m", adapter_prefix=adapter_prefix(p, "done1-a1"),
                             created_at=0))
        s.add(TinkerCheckpoint(id="ckpt-kept", project_id=p, model_id="s:train:0",
                               kind="sampler", name="n",
                               path="tinker://s:train:0/sampler_weights/n",
                               base_model="m", lora_config={"rank": 8},
                               blob_prefix=tinker_checkpoint_prefix(p, "ckpt-kept"),
                               size_bytes=1, user_metadata={}, created_at=0))
    kept = [tinker_checkpoint_prefix(p, "ckpt-kept") + "adapter_model.safetensors",
            file_key(p, "file-kept"), upload_part_key(p, "upload_open", "part_1"),
            job_prefix(p, "ftjob-running") + "state.tar",
            adapter_prefix(p, "done1-a1") + "adapter_model.safetensors",
            # A running job's checkpoint, uploaded before its row.
            adapter_prefix(p, "run1-ckpt-step-3-a1") + "adapter_model.safetensors"]
    orphans = [tinker_checkpoint_prefix(p, "ckpt-gone") + "adapter_model.safetensors",
               file_key(p, "file-gone"), upload_part_key(p, "upload_done", "part_1"),
               job_prefix(p, "ftjob-failed") + "state.tar",
               # The losing attempt's adapter, and one of a job deleted meanwhile.
               adapter_prefix(p, "done1-a2") + "adapter_model.safetensors",
               adapter_prefix(p, "zzz-a1") + "adapter_config.json"]
    for key in kept + orphans:
        blob_store.put(key, b"x")
    # Young: possibly waiting for its row, so nothing goes.
    assert sweep_orphans(database, blob_store, GRACE) == []
    removed = sweep_orphans(database, blob_store, GRACE, now=time.time() + GRACE + 60)
    assert sorted(removed) == sorted(orphans)
    assert sorted(blob_store.list_keys("")) == sorted(kept)


def test_unfinished_local_writes_are_swept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("files/p/file-a", b"done")
    writer = store.writer("files/p/file-b")
    writer.write(b"half")  # its process died here: the temp file stays
    assert store.remove_stale_partials(time.time() - GRACE) == 0
    assert store.remove_stale_partials(time.time() + 1) == 1
    assert store.list_keys("files/") == ["files/p/file-a"]
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()
                and p.name != "file-a"]
