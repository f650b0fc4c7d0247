"""`/v1/fine_tuning/checkpoints/{checkpoint}/permissions`: the owning project shares a
fine-tuned model (a checkpoint, or a job's final model) with other projects, which may then
chat with it and fine-tune from it. To anyone but the owner the model stays a 404 here."""

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import DB, CurrentProject
from api.errors import APIError, error_responses, not_found
from api.fine_tuning.checkpoints.permissions.schemas import (
    CreatePermissionsRequest,
    PermissionDeleted,
    PermissionList,
    PermissionObject,
)
from api.pagination import page
from storage.ids import new_id
from storage.models import CheckpointPermission, FineTunedModel, Project

# `:path`: a base model may be named like `Org/Model`, and so its fine-tuned models are.
router = APIRouter(prefix="/fine_tuning/checkpoints/{fine_tuned_model_checkpoint:path}/permissions",
                   tags=["fine-tuning"], responses=error_responses(404))


def _owned(session: DB, project: Project, checkpoint: str) -> FineTunedModel:
    row = session.scalar(select(FineTunedModel).where(FineTunedModel.id == checkpoint,
                                                      FineTunedModel.project_id == project.id))
    if row is None:
        raise not_found("fine-tuned model checkpoint", checkpoint, "fine_tuned_model_checkpoint")
    return row


@router.post("", response_model=PermissionList)
def create_permissions(fine_tuned_model_checkpoint: str, body: CreatePermissionsRequest,
                       project: CurrentProject, session: DB) -> PermissionList:
    model = _owned(session, project, fine_tuned_model_checkpoint)
    wanted = list(dict.fromkeys(body.project_ids))
    if project.id in wanted:
        raise APIError(400, "A project cannot be granted its own model.", param="project_ids",
                       code="invalid_value")
    known = set(session.scalars(select(Project.id).where(Project.id.in_(wanted))))
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise APIError(400, f"No such project: '{unknown[0]}'.", param="project_ids",
                       code="invalid_value")
    existing = {p.project_id: p for p in session.scalars(select(CheckpointPermission).where(
        CheckpointPermission.model_id == model.id, CheckpointPermission.project_id.in_(wanted)))}
    rows = []
    for project_id in wanted:  # granting again is no error: the existing grant is returned
        row = existing.get(project_id)
        if row is None:
            row = CheckpointPermission(id=new_id("cp_"), model_id=model.id,
                                       project_id=project_id, created_at=int(time.time()))
            session.add(row)
        rows.append(row)
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
    model = _owned(session, project, fine_tuned_model_checkpoint)
    query = select(CheckpointPermission).where(CheckpointPermission.model_id == model.id)
    if project_id is not None:
        query = query.where(CheckpointPermission.project_id == project_id)
    rows, has_more = page(session, query, CheckpointPermission, after=after, limit=limit,
                          order="asc" if order == "ascending" else "desc", scope=model.id)
    return PermissionList(data=[PermissionObject.of(r) for r in rows], has_more=has_more,
                          first_id=rows[0].id if rows else None,
                          last_id=rows[-1].id if rows else None)


@router.delete("/{permission_id}", response_model=PermissionDeleted)
def delete_permission(fine_tuned_model_checkpoint: str, permission_id: str,
                      project: CurrentProject, session: DB) -> PermissionDeleted:
    model = _owned(session, project, fine_tuned_model_checkpoint)
    row = session.scalar(select(CheckpointPermission).where(
        CheckpointPermission.id == permission_id, CheckpointPermission.model_id == model.id))
    if row is None:
        raise not_found("checkpoint permission", permission_id, "permission_id")
    session.delete(row)
    session.commit()
    return PermissionDeleted(id=permission_id, deleted=True)
