"""The Files API's objects, as OpenAI names them."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.lists import CursorPage
from storage.models import File

Purpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


class FileExpiration(BaseModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class CreateFileForm(BaseModel):
    """The non-file fields of `POST /v1/files`."""

    purpose: Purpose
    expires_after: FileExpiration | None = None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> "CreateFileForm":
        data: dict[str, Any] = {k: v for k, v in fields.items() if "[" not in k}
        expiry = {k[len("expires_after[") : -1]: v for k, v in fields.items()
                  if k.startswith("expires_after[") and k.endswith("]")}
        if expiry:
            data["expires_after"] = expiry
        return cls.model_validate(data)


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    # OpenAI leaves these out rather than sending null.
    expires_at: int | None = Field(default=None, exclude_if=lambda v: v is None)
    status_details: str | None = Field(default=None, exclude_if=lambda v: v is None)

    @classmethod
    def of(cls, row: File) -> "FileObject":
        return cls(
            id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
            purpose=row.purpose, status=row.status, expires_at=row.expires_at,
            status_details=row.status_details,
        )


class FileList(CursorPage[FileObject]):
    pass


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
