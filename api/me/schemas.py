"""The caller's project, shaped as OpenAI's project object."""

from typing import Literal

from pydantic import BaseModel

from storage.models import Project


class ProjectObject(BaseModel):
    id: str
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int

    @classmethod
    def of(cls, row: Project) -> "ProjectObject":
        return cls(id=row.id, name=row.name, created_at=row.created_at)
