"""`/v1/me`: the project of the key making the request (a tuneserve key is a project's, not
a user's), for the routes that name it: `/v1/organization/projects/{project_id}/...`."""

from fastapi import APIRouter

from api.deps import CurrentProject
from api.me.schemas import ProjectObject

router = APIRouter(prefix="/me", tags=["projects"])


@router.get("", response_model=ProjectObject)
async def retrieve_me(project: CurrentProject) -> ProjectObject:
    return ProjectObject.of(project)
