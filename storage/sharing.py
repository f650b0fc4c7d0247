"""Which fine-tuned models a project may use: its own, and those another project granted
it (checkpoint permissions). Using is chatting and fine-tuning from; managing (delete,
download, grant) stays the owner's."""

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from storage.models import CheckpointPermission, FineTunedModel


def granted_to(project_id: str):  # type: ignore[no-untyped-def]
    """A condition on FineTunedModel: another project granted it to `project_id`."""
    return exists().where(CheckpointPermission.model_id == FineTunedModel.id,
                          CheckpointPermission.project_id == project_id)


def usable_model(session: Session, project_id: str, model_id: str) -> FineTunedModel | None:
    return session.scalar(select(FineTunedModel).where(
        FineTunedModel.id == model_id,
        or_(FineTunedModel.project_id == project_id, granted_to(project_id))))
