"""`/v1/fine_tuning/checkpoints/{checkpoint}/permissions`: the owning project shares a
fine-tuned model (a checkpoint, or a job's final model) with other projects, which may then
chat with it and fine-tune from it. To anyone but the owner the model stays a 404 here."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import DB, CurrentProject
from api.errors import error_responses
from api.fine_tuning.checkpoints.permissions import service
from api.fine_tuning.checkpoints.permissions.schemas import (
    CreatePermissionsRequest,
    PermissionDeleted,
    PermissionList,
    PermissionObject,
)
from api.pagination import page
from storage.models import CheckpointPermission

# `:path`: a base model may be named like `Org/Model`, and so its fine-tuned models are.
router = APIRouter(prefix="/fine_tuning/checkpoints/{fine_tuned_model_checkpoint:path}/permissions",
                   tags=["fine-tuning"], responses=error_responses(404))


@router.post("", response_model=PermissionList)
def create_permissions(fine_tuned_model_checkpoint: str, body: CreatePermissionsRequest,
                       project: CurrentProject, session: DB) -> PermissionList:
    model = service.owned_model(session, project, fine_tuned_model_checkpoint)
    rows = service.grant(session, project, model, body.project_ids)
    session.commit()
    return PermissionList(data=[PermissionObject.of(r) for r in rows], has_more=False,
                          first_id=rows[0].id, last_id=rows[-1].id)


@router.get("", response_model=PermissionList)
def list_permissions(
    fine_tuned_model_checkpoint: str, project: CurrentProject, session: DB,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10,
    order: Literal["ascending", "descending"] = "descending",
    project_id: str | None = None,
) -> PermissionList:
    model = service.owned_model(session, project, fine_tuned_model_checkpoint)
    rows, has_more = page(session, service.model_permissions(model, project_id),
                          CheckpointPermission, after=after, limit=limit,
                          order="asc" if order == "ascending" else "desc", scope=model.id)
    return PermissionList(data=[PermissionObject.of(r) for r in rows], has_more=has_more,
                          first_id=rows[0].id if rows else None,
                          last_id=rows[-1].id if rows else None)


@router.delete("/{permission_id}", response_model=PermissionDeleted)
def delete_permission(fine_tuned_model_checkpoint: str, permission_id: str,
                      project: CurrentProject, session: DB) -> PermissionDeleted:
    model = service.owned_model(session, project, fine_tuned_model_checkpoint)
    service.revoke(session, model, permission_id)
    session.commit()
    return PermissionDeleted(id=permission_id, deleted=True)
