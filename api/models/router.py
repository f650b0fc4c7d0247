"""`/v1/models`: the base models, plus the project's fine-tuned models and checkpoints."""

from anyio import from_thread
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select

from api.deps import DB, AppServices, AppSettings, CurrentProject, Storage
from api.errors import APIError, error_responses
from api.models.archive import adapter_members, archive_size, tar_stream
from api.models.schemas import ModelDeleted, ModelList, ModelObject
from storage.base_models import base_models
from storage.models import FineTunedModel, FineTuningJob, Project
from storage.sharing import foreign_ancestor, granted_to
from training.export import file_name_for

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(403, 404))

BASE_OWNER = "tuneserve"


def _base_objects(settings: AppSettings) -> dict[str, ModelObject]:
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


def _own(session: DB, project: Project, model: str) -> FineTunedModel | None:
    return session.scalar(select(FineTunedModel).where(
        FineTunedModel.id == model, FineTunedModel.project_id == project.id))


def _tuned_objects(session: DB, project: Project, model: str | None = None) -> list[ModelObject]:
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


def _not_found(model: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


@router.get("", response_model=ModelList)
def list_models(project: CurrentProject, session: DB, settings: AppSettings) -> ModelList:
    return ModelList(data=[*_base_objects(settings).values(),
                           *_tuned_objects(session, project)])


@router.get("/{model:path}/adapter", response_class=StreamingResponse, responses={
    200: {"description": "Extension: the fine-tuned model's PEFT adapter folder "
                         "(adapter_config.json, adapter_model.safetensors, …) as a tar archive, "
                         "for the project that owns it; refused (403) for a model trained, "
                         "at any remove, from another project's model.",
          "content": {"application/x-tar": {"schema": {"type": "string",
                                                       "format": "binary"}}}}})
def download_adapter(model: str, project: CurrentProject, session: DB,
                     store: Storage) -> StreamingResponse:
    row = _own(session, project, model)
    if row is None:
        raise _not_found(model)
    # Its weights are practically the other project's, whose grant covers using them here.
    ancestor = foreign_ancestor(session, row)
    if ancestor is not None:
        raise APIError(403, f"The weights of '{model}' cannot be downloaded: it was trained "
                       f"from '{ancestor}', a model another project owns. It can be used "
                       "here (chat, fine-tuning) as that project allows.",
                       param="model", code="model_weights_not_owned")
    folder = file_name_for(model)
    members = adapter_members(store, row.adapter_prefix, folder)
    if not members:
        raise _not_found(model)
    return StreamingResponse(
        tar_stream(store, members), media_type="application/x-tar",
        headers={"content-disposition": f'attachment; filename="{folder}.tar"',
                 "content-length": str(archive_size(members))})


@router.get("/{model:path}", response_model=ModelObject)
def retrieve_model(model: str, project: CurrentProject, session: DB,
                   settings: AppSettings) -> ModelObject:
    base = _base_objects(settings).get(model)
    if base is not None:
        return base
    found = _tuned_objects(session, project, model)
    if not found:
        raise _not_found(model)
    return found[0]


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(model: str, project: CurrentProject, session: DB, store: Storage,
                 settings: AppSettings, services: AppServices) -> ModelDeleted:
    if model in base_models(settings):
        raise APIError(403, f"The base model '{model}' cannot be deleted.", param="model",
                       code="model_not_deletable")
    row = _own(session, project, model)
    if row is None:
        raise _not_found(model)
    session.delete(row)
    session.commit()
    if services.serving is not None:
        from_thread.run(services.serving.adapters.forget, model)
    store.delete_prefix(row.adapter_prefix)
    return ModelDeleted(id=model, deleted=True)
