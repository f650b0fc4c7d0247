"""`/v1/files`: upload (streamed), list, retrieve, delete, download."""

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from api.deps import DB, AppSettings, CurrentProject, DBFactory, Storage
from api.errors import APIError, error_responses, validation_error
from api.files import service
from api.files.schemas import CreateFileForm, FileDeleted, FileList, FileObject
from api.ingest import BlobSink, file_too_large
from api.multipart import BINARY, FilePart, multipart_body, read_form
from api.nul_characters import NUL
from api.pagination import page
from api.quotas import lock_project_storage, storage_full, stored_bytes
from storage.blob import BlobNotFound
from storage.db import Database
from storage.ids import new_id
from storage.keys import file_key
from storage.models import File, max_chars

router = APIRouter(prefix="/files", tags=["files"], responses=error_responses(403, 404, 507))

# Room for the multipart framing and small fields around the file itself.
FORM_OVERHEAD = 64 * 1024

_UPLOAD_BODY = multipart_body(["file", "purpose"], {
    "file": BINARY,
    "purpose": {"type": "string", "enum": ["assistants", "batch", "fine-tune", "vision",
                                           "user_data", "evals"]},
    "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
    "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
})


# What `files.filename` holds (characters).
MAX_FILENAME_CHARS = max_chars(File.filename)


class _FileSink(BlobSink):
    """Refuses a filename the files table cannot hold as soon as the part's headers arrive,
    before its bytes stream in (PostgreSQL refused it only at the end: a 500)."""

    async def start(self, part: FilePart, fields: dict[str, str]) -> None:
        if len(part.filename) > MAX_FILENAME_CHARS:
            raise APIError(400, f"The file's name is {len(part.filename)} characters long; "
                           f"it may have at most {MAX_FILENAME_CHARS}.", param="file",
                           code="invalid_filename")
        if NUL in part.filename:
            raise APIError(400, "The file's name may not hold NUL (\\u0000) characters.",
                           param="file", code="invalid_filename")
        await super().start(part, fields)


def _stored_bytes(db: Database, project_id: str) -> int:
    with db.session() as session:
        return stored_bytes(session, project_id)


@router.post("", response_model=FileObject, openapi_extra=_UPLOAD_BODY)
async def create_file(
    request: Request, project: CurrentProject, db: DBFactory, store: Storage,
    settings: AppSettings,
) -> FileObject:
    declared = int(request.headers.get("content-length") or 0)
    if declared > settings.max_file_bytes + FORM_OVERHEAD:
        raise file_too_large(settings.max_file_bytes, "file")
    quota = settings.max_project_stored_bytes
    used = 0
    if quota:
        used = await run_in_threadpool(_stored_bytes, db, project.id)
        full = storage_full(quota, used, max(0, declared - FORM_OVERHEAD))
        if full is not None:
            raise full
    file_id = new_id("file-")
    sink = _FileSink(store, file_key(project.id, file_id), settings.max_file_bytes,
                     check_jsonl=True)
    try:
        fields = await read_form(request, lambda name: sink if name == "file" else None)
        try:
            form = CreateFileForm.from_fields(fields)
        except ValidationError as exc:
            raise validation_error(exc.errors(), located=False) from None
        if sink.part is None:
            raise APIError(400, "Missing required parameter: 'file'.", param="file",
                           code="missing_required_parameter")
        if sink.size == 0:
            raise APIError(400, "The file is empty.", param="file", code="empty_file")
        full = storage_full(quota, used, sink.size)  # sent without a length, say
        if full is not None:
            raise full
        if form.purpose == "fine-tune" and sink.jsonl and sink.jsonl.error:
            raise APIError(400, f"Invalid file format for fine-tuning: {sink.jsonl.error} "
                           "Each line must be a JSON object (JSONL).",
                           param="file", code="invalid_file_format")
        await sink.commit()
    except BaseException:
        await sink.abort()
        raise
    filename = sink.part.filename  # a form without the file part was refused above

    def record() -> File:
        with db.session() as session:
            if quota:
                # Requests that passed the check above together are counted one after
                # another here, under the project's lock (on every API node).
                lock_project_storage(session, project.id)
                full = storage_full(quota, stored_bytes(session, project.id), sink.size)
                if full is not None:
                    raise full
            return service.add_file(
                session, file_id=file_id, project_id=project.id, filename=filename,
                purpose=form.purpose, size=sink.size,
                expires_after=form.expires_after.seconds if form.expires_after else None,
            )

    try:
        row = await run_in_threadpool(record)
    except BaseException:
        await run_in_threadpool(store.delete, sink.key)
        raise
    return FileObject.of(row)


@router.get("", response_model=FileList)
def list_files(
    project: CurrentProject,
    session: DB,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> FileList:
    rows, has_more = page(session, service.visible_files(project.id, purpose), File,
                          after=after, limit=limit, order=order, scope=project.id)
    return FileList(
        data=[FileObject.of(r) for r in rows],
        first_id=rows[0].id if rows else None,
        last_id=rows[-1].id if rows else None,
        has_more=has_more,
    )


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, project: CurrentProject, session: DB) -> FileObject:
    return FileObject.of(service.get_file(session, project.id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, project: CurrentProject, session: DB, store: Storage) -> FileDeleted:
    service.delete_file(session, store, service.get_file(session, project.id, file_id))
    return FileDeleted(id=file_id, deleted=True)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_file(
    file_id: str, project: CurrentProject, session: DB, store: Storage
) -> StreamingResponse:
    row = service.get_file(session, project.id, file_id)
    try:
        chunks = store.read(file_key(project.id, row.id))
    except BlobNotFound:
        raise APIError(404, f"The content of file '{file_id}' is missing from storage.",
                       param="file_id", code="not_found") from None
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(row.bytes),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(row.filename)}",
        },
    )
