"""File rows: lookups scoped to a project, creation, deletion."""

import time

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from api.errors import not_found
from storage.blob import BlobStore
from storage.files import add_file
from storage.keys import file_key
from storage.models import File

__all__ = ["add_file", "delete_file", "get_file", "visible_files"]


def visible_files(project_id: str, purpose: str | None = None) -> Select[File]:
    """The project's files that have not expired (the reaper deletes those soon after), of
    `purpose` only where given."""
    now = int(time.time())
    query = select(File).where(
        File.project_id == project_id, or_(File.expires_at.is_(None), File.expires_at > now)
    )
    return query if purpose is None else query.where(File.purpose == purpose)


def get_file(session: Session, project_id: str, file_id: str, param: str = "file_id") -> File:
    row = session.scalar(visible_files(project_id).where(File.id == file_id))
    if row is None:
        raise not_found("file", file_id, param)
    return row


def delete_file(session: Session, store: BlobStore, row: File) -> None:
    # The row goes first: a crash in between leaves an unreachable blob, never a dangling row.
    session.delete(row)
    session.commit()
    store.delete(file_key(row.project_id, row.id))
