"""A project's API keys, shaped as OpenAI's project API key objects: never the secret, except
in the answer that made it."""

from typing import Literal

from pydantic import BaseModel

from api.lists import CursorPage
from storage.models import ApiKey


class ProjectApiKeyObject(BaseModel):
    id: str
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    # The key's first 8 and last 4 characters, as `tuneserve keys list` shows them.
    redacted_value: str
    created_at: int

    @classmethod
    def of(cls, row: ApiKey) -> "ProjectApiKeyObject":
        return cls(id=row.id, redacted_value=row.redacted, created_at=row.created_at)


class ProjectApiKeyWithValue(ProjectApiKeyObject):
    """Only in the answer that made the key: only its sha256 is stored."""

    value: str


class ProjectApiKeyList(CursorPage[ProjectApiKeyObject]):
    pass


class ProjectApiKeyDeleted(BaseModel):
    id: str
    object: Literal["organization.project.api_key.deleted"] = (
        "organization.project.api_key.deleted")
    deleted: bool
