"""`/v1/models`: the base models, plus the project's fine-tuned models and checkpoints."""

from anyio import from_thread
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import DB, AppServices, AppSettings, CurrentProject, Storage
from api.errors import APIError, error_responses
from api.models import service
from api.models.archive import adapter_members, archive_size, tar_stream
from api.models.schemas import ModelDeleted, ModelList, ModelObject
from storage.base_models import base_models
from storage.sharing import foreign_ancestor
from training.export import file_name_for

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(403, 404))


@router.get("", response_model=ModelList)
def list_models(project: CurrentProject, session: DB, settings: AppSettings) -> ModelList:
    return ModelList(data=[*service.base_objects(settings).values(),
                           *service.tuned_objects(session, project)])


@router.get("/{model:path}/adapter", response_class=StreamingResponse, responses={
    200: {"description": "Extension: the fine-tuned model's PEFT adapter folder "
                         "(adapter_config.json, adapter_model.safetensors, …) as a tar archive, "
                         "for the project that owns it; refused (403) for a model trained, "
                         "at any remove, from another project's model.",
          "content": {"application/x-tar": {"schema": {"type": "string",
                                                       "format": "binary"}}}}})
def download_adapter(model: str, project: CurrentProject, session: DB,
                     store: Storage) -> StreamingResponse:
    row = service.own_model(session, project, model)
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
        raise service.model_not_found(model)
    return StreamingResponse(
        tar_stream(store, members), media_type="application/x-tar",
        headers={"content-disposition": f'attachment; filename="{folder}.tar"',
                 "content-length": str(archive_size(members))})


@router.get("/{model:path}", response_model=ModelObject)
def retrieve_model(model: str, project: CurrentProject, session: DB,
                   settings: AppSettings) -> ModelObject:
    base = service.base_objects(settings).get(model)
    if base is not None:
        return base
    found = service.tuned_objects(session, project, model)
    if not found:
        raise service.model_not_found(model)
    return found[0]


@router.delete("/{model:path}", response_model=ModelDeleted)
def delete_model(model: str, project: CurrentProject, session: DB, store: Storage,
                 settings: AppSettings, services: AppServices) -> ModelDeleted:
    if model in base_models(settings):
        raise APIError(403, f"The base model '{model}' cannot be deleted.", param="model",
                       code="model_not_deletable")
    row = service.own_model(session, project, model)
    service.delete_model(session, row)
    session.commit()
    if services.serving is not None:
        from_thread.run(services.serving.adapters.forget, model)
    store.delete_prefix(row.adapter_prefix)
    return ModelDeleted(id=model, deleted=True)
