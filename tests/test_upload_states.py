"""An Upload's state machine (storage/uploads.py), on SQLite and PostgreSQL: every pair of
the table through the one writer, and the reaper racing a completion."""

import time
from typing import Any

import pytest
from sqlalchemy import event, select, update

from api.background.reaper import reap_expired
from api.tenancy import get_or_create_project
from storage.blob import BlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import upload_part_key
from storage.models import Upload
from storage.states import IllegalTransition
from storage.uploads import TRANSITIONS, UploadStatus, finish, status_of

ALL = list(UploadStatus)


def _upload(db: Database, status: UploadStatus, expires_in: int) -> str:
    now = int(time.time())
    with db.session() as s:
        project = get_or_create_project(s, "uploads")
        upload = Upload(id=new_id("upload_"), project_id=project.id, filename="u",
                        purpose="batch", mime_type="text/plain", bytes=1, status=status,
                        created_at=now, expires_at=now + expires_in)
        s.add(upload)
    return upload.id


def _status(db: Database, upload_id: str) -> str:
    with db.session() as s:
        return s.scalar(select(Upload.status).where(Upload.id == upload_id)) or ""


@pytest.mark.parametrize("source", ALL)
def test_every_upload_transition_is_allowed_or_refused_by_the_table(
        source: UploadStatus, database: Database) -> None:
    for target in ALL:
        # Past its time for expired; within it for the others.
        upload_id = _upload(database, source, -1 if target is UploadStatus.EXPIRED else 3600)
        with database.session() as s:
            if target in TRANSITIONS[source]:
                assert finish(s, [upload_id], target) == [upload_id]
            elif target not in TRANSITIONS[UploadStatus.PENDING]:
                with pytest.raises(IllegalTransition):  # from no state: a bug
                    finish(s, [upload_id], target)
            else:  # from a finished upload: a race lost, nothing written
                assert finish(s, [upload_id], target) == []
        assert _status(database, upload_id) == (target if target in TRANSITIONS[source]
                                                else source)


def test_a_pending_upload_past_its_time_reads_expired_but_is_not_expired_early(
        database: Database) -> None:
    upload_id = _upload(database, UploadStatus.PENDING, 3600)
    with database.session() as s:
        row = s.scalar(select(Upload).where(Upload.id == upload_id))
        assert row is not None
        assert status_of(row) is UploadStatus.PENDING
        assert status_of(row, now=row.expires_at) is UploadStatus.EXPIRED
        assert finish(s, [upload_id], UploadStatus.EXPIRED) == []  # not yet past its time
    assert _status(database, upload_id) == "pending"


def test_the_reaper_does_not_expire_an_upload_completed_meanwhile(
        database: Database, blob_store: BlobStore) -> None:
    # The reaper reads the uploads past their time; before it writes, a completion that
    # began in time commits. The completed upload stays completed, and its parts are not the
    # reaper's to delete.
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes one at a time: the completion cannot slip in between")
    upload_id = _upload(database, UploadStatus.PENDING, -1)
    with database.session() as s:
        project_id = s.scalar(select(Upload.project_id).where(Upload.id == upload_id))
    part = upload_part_key(str(project_id), upload_id, "part_1")
    blob_store.put(part, b"x")
    completed = False

    def complete_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal completed
        if not completed and statement.startswith("SELECT") and "FROM uploads" in statement:
            completed = True
            with database.session() as other:
                other.execute(update(Upload).where(Upload.id == upload_id)
                              .values(status="completed", file_id="file-done"))

    event.listen(database.engine, "after_cursor_execute", complete_meanwhile)
    try:
        assert reap_expired(database, blob_store) == 0
    finally:
        event.remove(database.engine, "after_cursor_execute", complete_meanwhile)
    assert completed and _status(database, upload_id) == "completed"
    assert blob_store.list_keys("") == [part]
