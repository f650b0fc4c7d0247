"""Checkpoint permissions: the owner's model, the grants it makes, lists and revokes."""

import time

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from storage.ids import new_id
from storage.models import CheckpointPermission, FineTunedModel, Project


def owned_model(session: Session, project: Project, checkpoint: str) -> FineTunedModel:
    """The project's own fine-tuned model (or checkpoint); any other is a 404."""
    row = session.scalar(select(FineTunedModel).where(FineTunedModel.id == checkpoint,
                                                      FineTunedModel.project_id == project.id))
    if row is None:
        raise not_found("fine-tuned model checkpoint", checkpoint, "fine_tuned_model_checkpoint")
    return row


def grant(session: Session, project: Project, model: FineTunedModel,
          project_ids: list[str]) -> list[CheckpointPermission]:
    """One grant per project named, in their order; granting again is no error: the existing
    grant is returned."""
    wanted = list(dict.fromkeys(project_ids))
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
    for project_id in wanted:
        row = existing.get(project_id)
        if row is None:
            row = CheckpointPermission(id=new_id("cp_"), model_id=model.id,
                                       project_id=project_id, created_at=int(time.time()))
            session.add(row)
        rows.append(row)
    return rows


def model_permissions(model: FineTunedModel,
                      project_id: str | None) -> Select[CheckpointPermission]:
    """The model's grants (to `project_id` only, where given)."""
    query = select(CheckpointPermission).where(CheckpointPermission.model_id == model.id)
    if project_id is not None:
        query = query.where(CheckpointPermission.project_id == project_id)
    return query


def revoke(session: Session, model: FineTunedModel, permission_id: str) -> None:
    row = session.scalar(select(CheckpointPermission).where(
        CheckpointPermission.id == permission_id, CheckpointPermission.model_id == model.id))
    if row is None:
        raise not_found("checkpoint permission", permission_id, "permission_id")
    session.delete(row)
