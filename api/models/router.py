"""`/v1/models`: the base models, plus the project's fine-tuned models and checkpoints."""

from anyio import from_thread
from fastapi import APIRouter, Request
from sqlalchemy import select

from api.deps import DB, AppSettings, CurrentProject, Storage
from api.errors import APIError
from api.models.schemas import ModelDeleted, ModelList, ModelObject
from storage.base_models import base_models
from storage.models import FineTunedModel, Project

router = APIRouter(prefix="/models", tags=["models"])

BASE_OWNER = "tuneserve"


def _base_objects(settings: AppSettings) -> dict[str, ModelObject]:
    out = {}
    for spec in base_models(settings).values():
        if spec.prepared:
            created = int((spec.path / "config.json").stat().st_mtime)
            out[spec.name] = ModelObject(id=spec.name, created=created, owned_by=BASE_OWNER)
    return out


def _own(session: DB, project: Project, model: str) -> FineTunedModel | None:
    return session.scalar(select(FineTunedModel).where(
        FineTunedModel.id == model, FineTunedModel.project_id == project.id))


def _not_found(model: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


@router.get("", response_model=ModelList)
def list_models(project: CurrentProject, session: DB, settings: AppSettings) -> ModelList:
    tuned = session.scalars(select(FineTunedModel).where(FineTunedModel.project_id == project.id)
                            .order_by(FineTunedModel.seq))
    return ModelList(data=[*_base_objects(settings).values(), *[
        ModelObject(id=m.id, created=m.created_at, owned_by=project.name) for m in tuned]])


@router.get("/{model:path}", response_model=ModelObject)
def retrieve_model(model: str, project: CurrentProject, session: DB,
                   settings: AppSettings) -> ModelObject:
    base = _base_objects(settings).get(model)
    if base is not None:
        return base
    row = _own(session, project, model)
    if row is None:
        raise _not_found(model)
    return ModelObject(id=row.id, created=row.created_at, owned_by=project.name)


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(model: str, request: Request, project: CurrentProject, session: DB, store: Storage,
                 settings: AppSettings) -> ModelDeleted:
    if model in base_models(settings):
        raise APIError(403, f"The base model '{model}' cannot be deleted.", param="model",
                       code="model_not_deletable")
    row = _own(session, project, model)
    if row is None:
        raise _not_found(model)
    session.delete(row)
    session.commit()
    adapters = getattr(request.app.state, "adapters", None)
    if adapters is not None:
        from_thread.run(adapters.forget, model)
    store.delete_prefix(row.adapter_prefix)
    return ModelDeleted(id=model, deleted=True)
