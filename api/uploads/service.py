"""Upload rows and the assembly of parts into a File. Their states, and the one writer
that moves them, are in `storage/uploads.py`."""

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.ingest import JsonlChecker
from storage.blob import BlobStore
from storage.models import Upload, UploadPart
from storage.uploads import UploadStatus, status_of


def get_upload(session: Session, project_id: str, upload_id: str) -> Upload:
    row = session.scalar(
        select(Upload).where(Upload.id == upload_id, Upload.project_id == project_id)
    )
    if row is None:
        raise not_found("upload", upload_id, "upload_id")
    return row


def get_pending_upload(session: Session, project_id: str, upload_id: str) -> Upload:
    row = get_upload(session, project_id, upload_id)
    status = status_of(row)
    if status is not UploadStatus.PENDING:
        raise APIError(409, f"Upload '{upload_id}' is {status}; it no longer takes changes.",
                       param="upload_id", code="upload_not_pending")
    return row


def parts_bytes(session: Session, upload_id: str) -> int:
    sizes = session.scalars(select(UploadPart.bytes).where(UploadPart.upload_id == upload_id))
    return sum(sizes)


def ordered_parts(session: Session, upload: Upload, part_ids: list[str]) -> list[UploadPart]:
    """The parts named by `part_ids`, in that order, after checking they make the file."""
    if len(set(part_ids)) != len(part_ids):
        raise APIError(400, "Each part may be listed only once in 'part_ids'.",
                       param="part_ids", code="duplicate_part")
    rows = {
        p.id: p
        for p in session.scalars(
            select(UploadPart).where(UploadPart.upload_id == upload.id,
                                     UploadPart.id.in_(part_ids))
        )
    }
    for part_id in part_ids:
        if part_id not in rows:
            raise APIError(400, f"Part '{part_id}' does not belong to upload '{upload.id}'.",
                           param="part_ids", code="invalid_part")
    total = sum(rows[p].bytes for p in part_ids)
    if total != upload.bytes:
        raise APIError(
            400,
            f"The parts add up to {total} bytes, but the upload was created for {upload.bytes}.",
            param="part_ids", code="size_mismatch",
        )
    return [rows[p] for p in part_ids]


def verify_content(store: BlobStore, key: str, md5: str | None, check_jsonl: bool) -> None:
    """One pass over the assembled file: its md5 when the client gave one, and the JSONL
    check for fine-tune files. Raises a 400 naming the field on a mismatch."""
    if md5 is None and not check_jsonl:
        return
    digest = hashlib.md5(usedforsecurity=False)
    jsonl = JsonlChecker() if check_jsonl else None
    for chunk in store.read(key):
        digest.update(chunk)
        if jsonl:
            jsonl.feed(chunk)
    if jsonl:
        jsonl.finish()
        if jsonl.error:
            raise APIError(400, f"Invalid file format for fine-tuning: {jsonl.error}",
                           param="part_ids", code="invalid_file_format")
    if md5 is not None and digest.hexdigest() != md5.lower():
        raise APIError(400, f"The md5 of the assembled file is {digest.hexdigest()}, not {md5}.",
                       param="md5", code="md5_mismatch")
