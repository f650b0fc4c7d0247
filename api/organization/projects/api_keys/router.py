"""`/v1/organization/projects/{project_id}/api_keys`: list, retrieve and revoke (DELETE) as
OpenAI's project API keys, and, a tuneserve extension, POST to make one; on the caller's own
project only."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DB, AppSettings, CurrentProject
from api.errors import error_responses
from api.organization.projects.api_keys import service
from api.organization.projects.api_keys.schemas import (
    ProjectApiKeyDeleted,
    ProjectApiKeyList,
    ProjectApiKeyObject,
    ProjectApiKeyWithValue,
)
from api.pagination import page
from storage.models import ApiKey

router = APIRouter(prefix="/organization/projects/{project_id}/api_keys",
                   tags=["projects"], responses=error_responses(404))
KEY = "/{key_id}"


@router.post("", response_model=ProjectApiKeyWithValue)
def create_project_api_key(project_id: str, project: CurrentProject, session: DB,
                           settings: AppSettings) -> ProjectApiKeyWithValue:
    """Makes a key for the project (nothing to choose: no body is read); its `value` is in
    this answer only."""
    service.check_own_project(project.id, project_id)
    row, secret = service.create_key(session, project.id,
                                     max_keys=settings.api_keys_max_per_project)
    session.commit()
    return ProjectApiKeyWithValue(**ProjectApiKeyObject.of(row).model_dump(), value=secret)


@router.get("", response_model=ProjectApiKeyList)
def list_project_api_keys(
    project_id: str, project: CurrentProject, session: DB,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ProjectApiKeyList:
    service.check_own_project(project.id, project_id)
    rows, has_more = page(session, service.project_keys(project.id), ApiKey,
                          after=after, limit=limit)
    return ProjectApiKeyList(
        data=[ProjectApiKeyObject.of(r) for r in rows],
        first_id=rows[0].id if rows else None, last_id=rows[-1].id if rows else None,
        has_more=has_more,
    )


@router.get(KEY, response_model=ProjectApiKeyObject)
def retrieve_project_api_key(project_id: str, key_id: str, project: CurrentProject,
                             session: DB) -> ProjectApiKeyObject:
    service.check_own_project(project.id, project_id)
    return ProjectApiKeyObject.of(service.get_key(session, project.id, key_id))


@router.delete(KEY, response_model=ProjectApiKeyDeleted)
def delete_project_api_key(project_id: str, key_id: str, project: CurrentProject,
                           session: DB) -> ProjectApiKeyDeleted:
    """Revokes the key: refused by every API process from the moment this answers."""
    service.check_own_project(project.id, project_id)
    service.revoke_key(session, project.id, key_id)
    session.commit()
    return ProjectApiKeyDeleted(id=key_id, deleted=True)
