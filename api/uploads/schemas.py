"""The Uploads API's objects, as OpenAI names them."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.files.schemas import FileExpiration, FileObject, Purpose
from storage.models import File, Upload, UploadPart
from storage.uploads import UploadStatus, status_of


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int = Field(gt=0)
    filename: str = Field(min_length=1, max_length=512)
    mime_type: str = Field(min_length=1, max_length=255)
    purpose: Purpose
    expires_after: FileExpiration | None = None


class CompleteUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_ids: list[str] = Field(min_length=1)
    md5: str | None = None


class UploadObject(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: UploadStatus
    file: FileObject | None = None

    @classmethod
    def of(cls, row: Upload, file: File | None = None,
           status: UploadStatus | None = None) -> "UploadObject":
        return cls(
            id=row.id, bytes=row.bytes, created_at=row.created_at, expires_at=row.expires_at,
            filename=row.filename, purpose=row.purpose, status=status or status_of(row),
            file=FileObject.of(file) if file else None,
        )


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def of(cls, row: UploadPart) -> "UploadPartObject":
        return cls(id=row.id, created_at=row.created_at, upload_id=row.upload_id)
