"""Checkpoint permissions, as the openai client's `fine_tuning.checkpoints.permissions`
reads them."""

from typing import Literal

from pydantic import BaseModel, Field

from api.lists import Page
from storage.models import CheckpointPermission


class CreatePermissionsRequest(BaseModel):
    project_ids: list[str] = Field(min_length=1, max_length=100)


class PermissionObject(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str

    @classmethod
    def of(cls, row: CheckpointPermission) -> "PermissionObject":
        return cls(id=row.id, created_at=row.created_at, project_id=row.project_id)


class PermissionList(Page[PermissionObject]):
    # OpenAI's permission list has them after has_more, and optional.
    first_id: str | None = None
    last_id: str | None = None


class PermissionDeleted(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    deleted: bool
