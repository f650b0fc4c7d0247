"""Expired files and uploads leave the DB and the blob store."""

import time

from sqlalchemy import select, update

from api.background.reaper import reap_expired
from api.files.service import add_file, visible_files
from api.tenancy import get_or_create_project
from storage.blob import BlobStore
from storage.db import Database
from storage.keys import file_key, upload_part_key
from storage.models import CursorTombstone, File, StoredResponse, Upload


def test_expired_objects_are_swept(database: Database, blob_store: BlobStore) -> None:
    now = int(time.time())
    with database.session() as s:
        project = get_or_create_project(s, "p")
        for file_id, expires_after in (("file-old", 3600), ("file-keep", None)):
            add_file(s, file_id=file_id, project_id=project.id, filename="f", purpose="batch",
                     size=1, expires_after=expires_after)
            blob_store.put(file_key(project.id, file_id), b"x")
        s.add(Upload(id="upload_old", project_id=project.id, filename="u", purpose="batch",
                     mime_type="text/plain", bytes=1, status="pending", created_at=now,
                     expires_at=now + 3600))
    blob_store.put(upload_part_key(project.id, "upload_old", "part_1"), b"x")
    assert reap_expired(database, blob_store) == 0

    with database.session() as s:  # time passes
        s.execute(update(File).where(File.id == "file-old").values(expires_at=now - 1))
        s.execute(update(Upload).values(expires_at=now - 1))
        assert [f.id for f in s.scalars(visible_files(project.id))] == ["file-keep"]
    assert reap_expired(database, blob_store) == 2

    with database.session() as s:
        assert list(s.scalars(select(File.id))) == ["file-keep"]
        assert s.scalar(select(Upload.status)) == "expired"
    assert blob_store.list_keys("") == [file_key(project.id, "file-keep")]
    with database.session() as s:  # the expired file left a tombstone for list cursors
        assert list(s.scalars(select(CursorTombstone.id))) == ["file-old"]


def test_cursor_tombstones_are_kept_a_day(database: Database, blob_store: BlobStore) -> None:
    with database.session() as s:
        project = get_or_create_project(s, "tombstones")
        for file_id in ("file-a", "file-b"):
            add_file(s, file_id=file_id, project_id=project.id, filename="f",
                     purpose="batch", size=1)
    with database.session() as s:
        for row in s.scalars(select(File).where(File.project_id == project.id)):
            s.delete(row)
    with database.session() as s:  # one of them deleted more than a day ago
        s.execute(update(CursorTombstone).where(CursorTombstone.id == "file-a")
                  .values(deleted_at=time.time() - 86_401))
    reap_expired(database, blob_store)
    with database.session() as s:
        assert list(s.scalars(select(CursorTombstone.id))) == ["file-b"]


def test_a_row_deleted_twice_at_once_leaves_one_tombstone_in_its_own_list(
        database: Database) -> None:
    import warnings

    from storage.tombstones import deleted_position

    with database.session() as s:
        project = get_or_create_project(s, "twice")
        add_file(s, file_id="file-twice", project_id=project.id, filename="f",
                 purpose="batch", size=1)
    # Two requests delete it at once (a client's retry, the reaper): both had read it.
    with database.sessions() as first, database.sessions() as second:
        rows = [session.get(File, s_seq) for session, s_seq in (
            (first, first.scalar(select(File.seq).where(File.id == "file-twice"))),
            (second, second.scalar(select(File.seq).where(File.id == "file-twice"))))]
        first.delete(rows[0])
        first.commit()
        second.delete(rows[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy: 0 rows matched, as expected
            second.commit()
    with database.session() as s:
        assert list(s.scalars(select(CursorTombstone.id))) == ["file-twice"]
        assert deleted_position(s, "files", project.id, "file-twice") is not None
        assert deleted_position(s, "files", "proj_other", "file-twice") is None


def test_stored_responses_are_kept_for_their_retention_only(
        database: Database, blob_store: BlobStore) -> None:
    now, day = int(time.time()), 86_400
    with database.session() as s:
        project = get_or_create_project(s, "responses")
        for response_id, age_days in (("resp_old", 31), ("resp_new", 1)):
            s.add(StoredResponse(id=response_id, project_id=project.id, depth=1,
                                 input_items=[], input_item_ids=[], response={"id": response_id},
                                 bytes=2, created_at=now - age_days * day))
    assert reap_expired(database, blob_store) == 0  # without a retention: kept
    assert reap_expired(database, blob_store, response_retention_seconds=30 * day) == 1
    with database.session() as s:
        assert list(s.scalars(select(StoredResponse.id))) == ["resp_new"]


def test_tinker_checkpoints_go_when_their_ttl_ends(database: Database,
                                                   blob_store: BlobStore) -> None:
    from storage.keys import tinker_checkpoint_prefix
    from storage.models import TinkerCheckpoint

    now = int(time.time())
    with database.session() as s:
        project = get_or_create_project(s, "p")
        for name, expires_at in (("ckpt-old", now - 1), ("ckpt-kept", None),
                                 ("ckpt-later", now + 3600)):
            prefix = tinker_checkpoint_prefix(project.id, name)
            s.add(TinkerCheckpoint(id=name, project_id=project.id, model_id="s:train:0",
                                   kind="weights", name=name, path=f"tinker://s:train:0/weights/"
                                   f"{name}", base_model="b", lora_config={"rank": 8},
                                   blob_prefix=prefix, size_bytes=1, user_metadata={},
                                   created_at=now, expires_at=expires_at))
            blob_store.put(prefix + "adapter_model.safetensors", b"x")
        s.commit()
    assert reap_expired(database, blob_store) == 1
    with database.session() as s:
        assert sorted(s.scalars(select(TinkerCheckpoint.id))) == ["ckpt-kept", "ckpt-later"]
    assert not blob_store.list_keys(tinker_checkpoint_prefix(project.id, "ckpt-old"))
    assert blob_store.list_keys(tinker_checkpoint_prefix(project.id, "ckpt-kept"))


def test_a_sample_its_node_never_answered_fails_after_the_engine_s_deadline(
    database: Database, blob_store: BlobStore
) -> None:
    from storage.models import TinkerFuture
    from training.tinker.futures import FutureStatus

    now = int(time.time())
    with database.session() as s:
        project = get_or_create_project(s, "p")
        for name, kind, age in (("req-lost", "sample", 3600), ("req-running", "sample", 60),
                                ("req-queued-step", "optim_step", 3600)):
            s.add(TinkerFuture(id=name, project_id=project.id, model_id="m", kind=kind,
                               status=FutureStatus.PENDING, created_at=now - age))
        s.commit()
    reap_expired(database, blob_store, sample_deadline_seconds=720)
    with database.session() as s:
        status = {row.id: row.status for row in
                  s.execute(select(TinkerFuture.id, TinkerFuture.status))}
        lost = s.scalar(select(TinkerFuture.result).where(TinkerFuture.id == "req-lost"))
    # Only the sample older than the deadline: a trainer's request waits for its trainer.
    assert status == {"req-lost": "failed", "req-running": "pending",
                      "req-queued-step": "pending"}
    assert lost is not None and lost["category"] == "server" and "sample again" in lost["error"]
