"""`/v1/uploads`: a large file in parts, assembled into a File on completion."""

import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import DB, AppSettings, CurrentProject, DBFactory, Storage
from api.errors import APIError, error_responses
from api.files import service as files
from api.ingest import BlobSink
from api.multipart import BINARY, multipart_body, read_form
from api.quotas import lock_project_storage, pending_uploads, storage_full, stored_bytes
from api.uploads import service
from api.uploads.schemas import (
    CompleteUploadRequest,
    CreateUploadRequest,
    UploadObject,
    UploadPartObject,
)
from storage.db import Database
from storage.ids import new_id
from storage.keys import file_key, upload_part_key, upload_prefix
from storage.models import Upload, UploadPart
from storage.uploads import UploadStatus, finish

router = APIRouter(prefix="/uploads", tags=["uploads"],
                   responses=error_responses(403, 404, 409, 507))

_PART_BODY = multipart_body(["data"], {"data": BINARY})


@router.post("", response_model=UploadObject)
def create_upload(
    body: CreateUploadRequest, project: CurrentProject, db: DBFactory, settings: AppSettings
) -> UploadObject:
    if body.bytes > settings.max_upload_bytes:
        raise APIError(400, f"An upload may hold at most {settings.max_upload_bytes} bytes.",
                       param="bytes", code="file_too_large")
    quota, most = settings.max_project_stored_bytes, settings.max_pending_uploads_per_project
    with db.session() as session:
        # The upload reserves its bytes now: checked and written under the project's lock.
        if quota or most:
            lock_project_storage(session, project.id)
        if most and pending_uploads(session, project.id) >= most:
            raise APIError(400, f"This project has {most} uploads in progress, the most it "
                           "may have; complete or cancel one first.",
                           code="upload_limit_reached")
        full = storage_full(quota, stored_bytes(session, project.id) if quota else 0,
                            body.bytes)
        if full is not None:
            raise full
        now = int(time.time())
        row = Upload(
            id=new_id("upload_"), project_id=project.id, filename=body.filename,
            purpose=body.purpose, mime_type=body.mime_type, bytes=body.bytes,
            status=UploadStatus.PENDING, created_at=now,
            expires_at=now + settings.upload_ttl_seconds,
            file_expires_after=body.expires_after.seconds if body.expires_after else None,
        )
        session.add(row)
    return UploadObject.of(row)


def _room_for_part(db: Database, project_id: str, upload_id: str,
                   quota: int) -> tuple[int, bool]:
    """The most bytes the next part may have, and whether the quota is what bounds it.

    A part is at most the upload's size, and its parts together at most twice that: room
    for parts sent again (a client retries a part whose answer it lost), whose first copy
    `complete` never lists. `complete` checks the listed parts' total. Parts beyond the
    upload's bytes (which it reserved) count against the quota."""
    with db.session() as session:
        upload = service.get_pending_upload(session, project_id, upload_id)
        sent = service.parts_bytes(session, upload_id)
        room = min(upload.bytes, 2 * upload.bytes - sent)
        if not quota:
            return room, False
        free = quota - stored_bytes(session, project_id)
        by_quota = max(0, upload.bytes - sent) + free
        return min(room, by_quota), by_quota < room


def _part_too_large(upload: Upload, sent: int, size: int, quota: int,
                    used: int) -> APIError | None:
    """Why a part of `size` does not fit in `upload` whose parts hold `sent` bytes, with
    the project's files and uploads holding `used` of `quota` bytes (None: it fits)."""
    if sent + size > 2 * upload.bytes:
        return APIError(400, f"The upload's parts would hold {sent + size} bytes, more than "
                        f"twice its {upload.bytes} bytes.", param="data",
                        code="part_too_large")
    # The upload holds max(bytes, sent) already; a part beyond that holds more.
    return storage_full(quota, used, max(0, sent + size - max(upload.bytes, sent)))


@router.post("/{upload_id}/parts", response_model=UploadPartObject, openapi_extra=_PART_BODY)
async def add_upload_part(
    upload_id: str, request: Request, project: CurrentProject, db: DBFactory, store: Storage,
    settings: AppSettings,
) -> UploadPartObject:
    quota = settings.max_project_stored_bytes
    room, quota_bound = await run_in_threadpool(_room_for_part, db, project.id, upload_id,
                                                quota)
    part_id = new_id("part_")
    key = upload_part_key(project.id, upload_id, part_id)
    sink = BlobSink(store, key, min(settings.max_part_bytes, max(room, 0)), check_jsonl=False)
    try:
        await read_form(request, lambda name: sink if name == "data" else None)
        if sink.part is None:
            raise APIError(400, "Missing required parameter: 'data'.", param="data",
                           code="missing_required_parameter")
        if sink.size == 0:
            raise APIError(400, "The part is empty.", param="data", code="empty_part")
        await sink.commit()
    except APIError as err:
        await sink.abort()
        if err.status == 413 and quota_bound and room < settings.max_part_bytes:
            raise APIError(403, "The part does not fit in this project's storage quota of "
                           f"{quota} bytes: the upload may take {max(room, 0)} more bytes. "
                           "Delete files, or cancel uploads in progress, to make room.",
                           param="data", code="storage_quota_exceeded") from None
        if err.status == 413:
            raise APIError(400, f"The part is larger than the {sink.max_bytes} bytes it may "
                           "have in this upload (a part is at most "
                           f"{settings.max_part_bytes} bytes).",
                           param="data", code="part_too_large") from None
        raise
    except BaseException:
        await sink.abort()
        raise

    def record() -> UploadPart:
        with db.session() as session:
            # Parts sent at the same time were each measured against the same room: they
            # are counted one after another, under the project's lock.
            lock_project_storage(session, project.id)
            # Still pending? A cancel or complete may have landed while the bytes streamed.
            upload = service.get_pending_upload(session, project.id, upload_id)
            refused = _part_too_large(upload, service.parts_bytes(session, upload_id),
                                      sink.size, quota,
                                      stored_bytes(session, project.id) if quota else 0)
            if refused is not None:
                raise refused
            row = UploadPart(id=part_id, upload_id=upload_id, bytes=sink.size,
                             created_at=int(time.time()))
            session.add(row)
            session.flush()
            return row

    try:
        part = await run_in_threadpool(record)
    except BaseException:
        await run_in_threadpool(store.delete, key)
        raise
    return UploadPartObject.of(part)


@router.post("/{upload_id}/complete", response_model=UploadObject)
def complete_upload(
    upload_id: str, body: CompleteUploadRequest, project: CurrentProject, db: DBFactory,
    store: Storage,
) -> UploadObject:
    with db.session() as session:
        upload = service.get_pending_upload(session, project.id, upload_id)
        # Its bytes were reserved when it was created (the file takes no more room).
        parts = service.ordered_parts(session, upload, body.part_ids)
    file_id = new_id("file-")
    key = file_key(project.id, file_id)
    store.compose(key, [upload_part_key(project.id, upload_id, p.id) for p in parts])
    try:
        service.verify_content(store, key, body.md5, check_jsonl=upload.purpose == "fine-tune")
        with db.session() as session:
            if not finish(session, [upload.id], UploadStatus.COMPLETED, file_id):
                raise APIError(409, f"Upload '{upload_id}' was completed, cancelled or expired "
                               "meanwhile.",
                               param="upload_id", code="upload_not_pending")
            row = files.add_file(
                session, file_id=file_id, project_id=project.id, filename=upload.filename,
                purpose=upload.purpose, size=upload.bytes,
                expires_after=upload.file_expires_after,
            )
    except BaseException:
        store.delete(key)
        raise
    store.delete_prefix(upload_prefix(project.id, upload_id))
    return UploadObject.of(upload, row, status=UploadStatus.COMPLETED)


@router.post("/{upload_id}/cancel", response_model=UploadObject)
def cancel_upload(
    upload_id: str, project: CurrentProject, session: DB, store: Storage
) -> UploadObject:
    upload = service.get_pending_upload(session, project.id, upload_id)
    if not finish(session, [upload.id], UploadStatus.CANCELLED):
        raise APIError(409, f"Upload '{upload_id}' was completed, cancelled or expired "
                       "meanwhile.",
                       param="upload_id", code="upload_not_pending")
    session.commit()
    store.delete_prefix(upload_prefix(project.id, upload_id))
    return UploadObject.of(upload, status=UploadStatus.CANCELLED)
