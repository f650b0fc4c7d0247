"""File rows, for the API and for workers that publish result files."""

import time

from sqlalchemy.orm import Session

from storage.models import File


def add_file(
    session: Session,
    *,
    file_id: str,
    project_id: str,
    filename: str,
    purpose: str,
    size: int,
    expires_after: int | None = None,
) -> File:
    now = int(time.time())
    row = File(
        id=file_id, project_id=project_id, filename=filename, purpose=purpose, bytes=size,
        status="processed", created_at=now,
        expires_at=None if expires_after is None else now + expires_after,
    )
    session.add(row)
    session.flush()
    return row
