"""`/api/v1`: the Tinker SDK's routes. The key comes as `X-API-Key` (api/gate.py checks it
before any route runs); everything a route touches is the key's project's."""

import contextlib
import io
from typing import Annotated, Any

import anyio
import zstandard
from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import (
    DB,
    Answers,
    AppServices,
    AppSettings,
    DBFactory,
    Storage,
    TinkerProject,
    Trainers,
)
from api.errors import APIError, error_responses
from api.tinker import downloads, service
from api.tinker.sampling import run_sample
from api.tinker.schemas import (
    CheckpointsListResponse,
    CheckpointTtlRequest,
    ClientConfig,
    ClientConfigRequest,
    CreateModelRequest,
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    DynamicConfig,
    ExternalWeightsUrls,
    FinishSessionRequest,
    GetInfoRequest,
    GetInfoResponse,
    GetSamplerResponse,
    Health,
    LoadWeightsRequest,
    OptimStepRequest,
    PromoteRequest,
    PromoteResponse,
    RetrieveFutureRequest,
    SampleRequest,
    SaveWeightsExternalRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    ServerCapabilities,
    SessionHeartbeatRequest,
    SessionHeartbeatResponse,
    TrainingRun,
    TrainingRunsResponse,
    TryAgain,
    UntypedFuture,
    WeightsInfoRequest,
    WeightsInfoResponse,
)
from storage.models import TinkerCheckpoint
from training.executors import ExecutorUnavailable
from training.tinker.launch import TinkerTrainers, TrainersBusy
from training.tinker.wire import MAX_FORWARD_BACKWARD_BYTES, BadRequest, header

router = APIRouter(prefix="/api/v1", tags=["tinker"],
                   responses=error_responses(400, 401, 413, 500, 503))

PROTOBUF = "application/x-protobuf"

# How long one `retrieve_future` waits for a pending answer before it says try again (the SDK
# asks again at once): a long poll, so a result is seen as it lands.
LONG_POLL_SECONDS = 5.0

# A training run's id in a path (`{session}:train:{n}`), and a checkpoint's within its run
# (`weights/{name}`, `sampler_weights/{name}` or `external_weights/{name}`).
RunId = Annotated[str, Path(max_length=128)]
CheckpointId = Annotated[str, Path(max_length=160)]


@router.post("/client/config", response_model=ClientConfig)
async def client_config(body: ClientConfigRequest, project: TinkerProject) -> ClientConfig:
    return ClientConfig()


@router.post("/client/dynamic_config", response_model=DynamicConfig)
async def client_dynamic_config(body: ClientConfigRequest,
                                project: TinkerProject) -> DynamicConfig:
    return DynamicConfig()


@router.get("/healthz", response_model=Health)
async def healthz(project: TinkerProject) -> Health:
    return Health()


@router.get("/get_server_capabilities", response_model=ServerCapabilities)
async def get_server_capabilities(project: TinkerProject,
                                  settings: AppSettings) -> ServerCapabilities:
    return service.capabilities(settings)


@router.post("/create_session", response_model=CreateSessionResponse,
             responses=error_responses(429))
def create_session(body: CreateSessionRequest, project: TinkerProject,
                   session: DB) -> CreateSessionResponse:
    return CreateSessionResponse(session_id=service.create_session(session, project, body))


@router.post("/session_heartbeat", response_model=SessionHeartbeatResponse,
             responses=error_responses(404, 410))
def session_heartbeat(body: SessionHeartbeatRequest, project: TinkerProject,
                      session: DB) -> SessionHeartbeatResponse:
    service.heartbeat(session, project, body.session_id)
    return SessionHeartbeatResponse()


@router.post("/sessions/{session_id}/finish", status_code=200, responses=error_responses(404))
def finish_session(session_id: Annotated[str, Path(max_length=64)], body: FinishSessionRequest,
                   project: TinkerProject,
                   session: DB) -> None:
    service.finish(session, project, session_id, body)


@router.post("/create_model", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def create_model(body: CreateModelRequest, project: TinkerProject, session: DB,
                 settings: AppSettings, trainers: Trainers) -> UntypedFuture:
    future = service.create_model(session, settings, project, body)
    assert future.model_id is not None
    # The trainer loads the base while the client prepares its first batch; with every
    # trainer busy, the run's first request asks again (and waits its turn).
    with contextlib.suppress(TrainersBusy, ExecutorUnavailable):
        trainers.ensure(future.model_id)
    return future


@router.post("/get_info", response_model=GetInfoResponse, responses=error_responses(404))
def get_info(body: GetInfoRequest, project: TinkerProject, session: DB,
             settings: AppSettings) -> GetInfoResponse:
    return service.get_info(session, settings, project, body.model_id)


async def _body(request: Request) -> bytes:
    """The protobuf body, zstd-decompressed where the SDK compressed it, within its bound."""
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() != "zstd":
        body = raw
    else:
        try:
            body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read(
                MAX_FORWARD_BACKWARD_BYTES + 1)
        except zstandard.ZstdError as exc:
            raise APIError(400, "The body is not valid zstd.", code="invalid_body") from exc
    if len(body) > MAX_FORWARD_BACKWARD_BYTES:
        raise APIError(413, f"A forward_backward body may be at most "
                       f"{MAX_FORWARD_BACKWARD_BYTES} bytes decompressed.",
                       code="request_too_large")
    return body


@router.post("/forward_backward", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
async def forward_backward(request: Request, project: TinkerProject, db: DBFactory,
                           trainers: Trainers) -> UntypedFuture:
    """A ForwardBackwardRequest protobuf (the SDK's `forward_backward` and `forward`),
    queued for the run's trainer; the answer is a ForwardBackwardOutput protobuf."""
    body = await _body(request)
    try:
        model_id, seq_id = header(body)
    except BadRequest as exc:
        raise APIError(400, str(exc), code="invalid_body") from exc

    def submit() -> UntypedFuture:
        with db.session() as session:
            future = service.submit(session, project, "forward_backward", model_id, seq_id,
                                    payload=body)
        _start_trainer(trainers, model_id)
        return future

    return await anyio.to_thread.run_sync(submit)


@router.post("/optim_step", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def optim_step(body: OptimStepRequest, project: TinkerProject, session: DB,
               trainers: Trainers) -> UntypedFuture:
    future = service.submit(session, project, "optim_step", body.model_id, body.seq_id,
                            request={"adam_params": body.adam_params.model_dump()})
    _start_trainer(trainers, body.model_id)
    return future


@router.post("/save_weights", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def save_weights(body: SaveWeightsRequest, project: TinkerProject, session: DB,
                 trainers: Trainers) -> UntypedFuture:
    """`save_state(name)`: the run's LoRA and optimizer, at `tinker://{run}/weights/{name}`."""
    future = service.save_weights(session, project, body)
    _start_trainer(trainers, body.model_id)
    return future


@router.post("/save_weights_external", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def save_weights_external(body: SaveWeightsExternalRequest, project: TinkerProject,
                          session: DB, trainers: Trainers) -> UntypedFuture:
    """The run's LoRA for download, at `tinker://{run}/external_weights/{name}` (a name used
    again replaces the files), age-encrypted to `age_encryption_recipients` when given."""
    future = service.save_weights_external(session, project, body)
    _start_trainer(trainers, body.model_id)
    return future


@router.get("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/external_weights_urls",
            response_model=ExternalWeightsUrls, responses=error_responses(404))
def external_weights_urls(run_id: RunId,
                          checkpoint_id: CheckpointId,
                          request: Request, project: TinkerProject, session: DB,
                          store: Storage) -> ExternalWeightsUrls:
    """A signed URL per file of external weights, working for an hour with no key."""
    root = str(request.base_url).rstrip("/")
    return downloads.signed_urls(session, store, project, run_id, checkpoint_id, root)


@router.get(downloads.FILES_PREFIX.removeprefix("/api/v1") + "{checkpoint}/{name}",
            response_class=StreamingResponse, responses=error_responses(403, 404))
def external_weights_file(checkpoint: Annotated[str, Path(max_length=64)],
                          name: Annotated[str, Path(max_length=128)],
                          expires: Annotated[int, Query(ge=0, le=2**40)],
                          signature: Annotated[str, Query(max_length=64)],
                          session: DB, store: Storage) -> StreamingResponse:
    """A file a signed URL names (no key: the signature is checked instead)."""
    chunks = downloads.signed_file(session, store, checkpoint, name, expires, signature)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl", status_code=200,
            responses=error_responses(404))
def set_checkpoint_ttl(run_id: RunId,
                       checkpoint_id: CheckpointId,
                       body: CheckpointTtlRequest, project: TinkerProject,
                       session: DB) -> None:
    service.set_checkpoint_ttl(session, project, run_id, checkpoint_id, body.ttl_seconds)


@router.post("/load_weights", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def load_weights(body: LoadWeightsRequest, project: TinkerProject, session: DB,
                 trainers: Trainers) -> UntypedFuture:
    """`load_state(path)`, or a training client created from a saved state."""
    future = service.load_weights(session, project, body)
    assert future.model_id is not None
    _start_trainer(trainers, future.model_id)
    return future


@router.post("/save_weights_for_sampler", response_model=UntypedFuture,
             responses=error_responses(404, 410, 429))
def save_weights_for_sampler(body: SaveWeightsForSamplerRequest, project: TinkerProject,
                             session: DB, trainers: Trainers) -> UntypedFuture:
    """The run's LoRA for sampling, at `tinker://{run}/sampler_weights/{name}`; without a
    name, a sampling session on it (`save_weights_and_get_sampling_client`)."""
    future = service.save_weights_for_sampler(session, project, body)
    _start_trainer(trainers, body.model_id)
    return future


@router.post("/create_sampling_session", response_model=CreateSamplingSessionResponse,
             responses=error_responses(404, 410))
def create_sampling_session(body: CreateSamplingSessionRequest, project: TinkerProject,
                            session: DB, settings: AppSettings) -> CreateSamplingSessionResponse:
    return CreateSamplingSessionResponse(
        sampling_session_id=service.create_sampling_session(session, settings, project, body))


@router.get("/samplers/{sampler_id}", response_model=GetSamplerResponse,
            responses=error_responses(404))
def get_sampler(sampler_id: Annotated[str, Path(max_length=64)], project: TinkerProject,
                session: DB) -> GetSamplerResponse:
    row = service.get_sampler(session, project, sampler_id)
    return GetSamplerResponse(sampler_id=row.id, base_model=row.base_model,
                              model_path=row.model_path)


@router.post("/asample", response_model=UntypedFuture, responses=error_responses(404, 429))
def asample(body: SampleRequest, project: TinkerProject, session: DB,
            services: AppServices, background: BackgroundTasks) -> UntypedFuture:
    """A sample from the sampler's model, done once this answer is sent; the future carries
    an id for each sequence it will return."""
    future, sampler = service.sample(session, project, body)
    if sampler is not None:
        background.add_task(run_sample, services, future.request_id, sampler, body)
    return future


# The REST client's view (tinker.RestClient): the project's runs and their checkpoints.

@router.get("/training_runs", response_model=TrainingRunsResponse)
def list_training_runs(project: TinkerProject, session: DB,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> TrainingRunsResponse:
    return service.list_runs(session, project, limit, offset)


@router.get("/training_runs/{run_id}", response_model=TrainingRun,
            responses=error_responses(404))
def get_training_run(run_id: RunId, project: TinkerProject,
                     session: DB) -> TrainingRun:
    return service.get_run(session, project, run_id)


@router.get("/training_runs/{run_id}/checkpoints", response_model=CheckpointsListResponse,
            responses=error_responses(404))
def list_checkpoints(run_id: RunId, project: TinkerProject,
                     session: DB) -> CheckpointsListResponse:
    return service.list_checkpoints(session, project, run_id)


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}", status_code=200,
               responses=error_responses(404))
async def delete_checkpoint(run_id: RunId,
                            checkpoint_id: CheckpointId,
                            project: TinkerProject, services: AppServices) -> None:
    """Deletes the checkpoint, its stored weights, and (sampler weights) its served copy."""

    def delete() -> TinkerCheckpoint:
        with services.db.session() as session:
            return service.delete_checkpoint(session, project, run_id, checkpoint_id)

    row = await anyio.to_thread.run_sync(delete)
    if services.serving is not None:
        await services.serving.adapters.forget(row.id)
    await anyio.to_thread.run_sync(services.store.delete_prefix, row.blob_prefix)


@router.post("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/promote",
             response_model=PromoteResponse, responses=error_responses(404))
def promote_checkpoint(run_id: RunId,
                       checkpoint_id: CheckpointId,
                       body: PromoteRequest, project: TinkerProject, session: DB,
                       store: Storage) -> PromoteResponse:
    """tuneserve's own route: sampler weights become an `ft:` model of the project, served
    by chat completions, listed, shared and exported like a job's."""
    return PromoteResponse(model=service.promote(session, store, project, run_id,
                                                 checkpoint_id, body.suffix))


@router.post("/weights_info", response_model=WeightsInfoResponse, responses=error_responses(404))
def weights_info(body: WeightsInfoRequest, project: TinkerProject,
                 session: DB) -> WeightsInfoResponse:
    return service.weights_info(session, project, body.tinker_path)


def _start_trainer(trainers: TinkerTrainers, model_id: str) -> None:
    try:
        trainers.ensure(model_id)
    except TrainersBusy as exc:
        # The SDK waits and submits again (the request itself is kept: same seq_id).
        raise APIError(429, f"Every trainer this server may run ({exc.args[0]}) is busy with "
                       "another run; the request is retried.", code="trainers_busy") from exc
    except ExecutorUnavailable as exc:
        raise APIError(503, f"No trainer can be started now ({exc}); the request is "
                       "retried.", code="trainers_unavailable") from exc


@router.post("/retrieve_future", response_model=dict[str, Any],
             responses=error_responses(404))
async def retrieve_future(body: RetrieveFutureRequest, project: TinkerProject,
                          db: DBFactory, answers: Answers) -> Any:
    """The request's answer as the SDK reads it (its result, or `{error, category}`; a
    forward_backward's as a protobuf), or `{"type": "try_again"}` while it is still being
    worked on."""

    def look() -> dict[str, Any] | bytes | None:
        with db.session() as session:
            return service.future_result(session, project, body.request_id)

    result = await anyio.to_thread.run_sync(look)  # also: the request is this project's
    if result is None and await answers.answered(body.request_id, LONG_POLL_SECONDS):
        result = await anyio.to_thread.run_sync(look)
    if result is None:
        return TryAgain(request_id=body.request_id).model_dump()
    if isinstance(result, bytes):
        return Response(content=result, media_type=PROTOBUF)
    return result
