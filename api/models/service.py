"""The models a project can see: the bases served here, its own fine-tuned models and those
shared with it; and the lookups behind downloading and deleting its own."""

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.models.schemas import ModelObject
from api.settings import Settings
from storage.base_models import base_models
from storage.models import FineTunedModel, FineTuningJob, Project
from storage.sharing import granted_to

BASE_OWNER = "tuneserve"


def base_objects(settings: Settings) -> dict[str, ModelObject]:
    """The bases a project can use: those served here (and, where jobs may train bases that
    are not served, every prepared one)."""
    served = None if settings.train_unserved_bases else settings.served_bases()
    out = {}
    for spec in base_models(settings).values():
        if spec.prepared and (served is None or spec.name in served):
            created = int((spec.path / "config.json").stat().st_mtime)
            out[spec.name] = ModelObject(id=spec.name, created=created, owned_by=BASE_OWNER,
                                         root=spec.name)
    return out


def tuned_objects(session: Session, project: Project,
                  model: str | None = None) -> list[ModelObject]:
    """The fine-tuned models the project may use (or the one named): its own and those
    shared with it, each with its owner and the model it started from."""
    query = (select(FineTunedModel, FineTuningJob.model, Project.name)
             .outerjoin(FineTuningJob, FineTuningJob.id == FineTunedModel.job_id)
             .join(Project, Project.id == FineTunedModel.project_id)
             .where(or_(FineTunedModel.project_id == project.id, granted_to(project.id)))
             .order_by(FineTunedModel.seq))
    if model is not None:
        query = query.where(FineTunedModel.id == model)
    return [ModelObject(id=m.id, created=m.created_at, owned_by=owner,
                        root=m.base_model, parent=parent or m.base_model)
            for m, parent, owner in session.execute(query)]


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def own_model(session: Session, project: Project, model: str) -> FineTunedModel:
    """The project's own fine-tuned model; one shared with it, or none, is a 404."""
    row = session.scalar(select(FineTunedModel).where(
        FineTunedModel.id == model, FineTunedModel.project_id == project.id))
    if row is None:
        raise model_not_found(model)
    return row


def delete_model(session: Session, row: FineTunedModel) -> None:
    # The grants made on it go with it (ON DELETE CASCADE).
    session.delete(row)
