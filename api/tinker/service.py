"""What the Tinker API's routes do, with their SQL: sessions, training runs and futures so far.

A session is `active` from `create_session` until its client finishes it (first reason
wins) or stops beating for `SESSION_IDLE_SECONDS`; only active sessions count against the
project's bound, and only an active one may create a training run. A request that does work
answers a future at once (`tinker_futures`), `pending` until the work is done, then
`succeeded` or `failed` with the answer the SDK reads. Everything is the project's own:
another project's session, run or future is not found."""

import time
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import APIError
from api.settings import Settings
from api.tinker.schemas import (
    Checkpoint,
    CheckpointsListResponse,
    CreateModelRequest,
    CreateSamplingSessionRequest,
    CreateSessionRequest,
    Cursor,
    FinishSessionRequest,
    GetInfoResponse,
    LoadWeightsRequest,
    ModelData,
    OptimizerConfig,
    SampleRequest,
    SaveWeightsExternalRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    ServerCapabilities,
    SupportedModel,
    TrainingRun,
    TrainingRunsResponse,
    UntypedFuture,
    WeightsInfoResponse,
)
from storage.base_models import base_models
from storage.blob import BlobStore
from storage.ids import new_id, random_token
from storage.keys import ADAPTER_FILES, adapter_prefix
from storage.models import (
    FineTunedModel,
    Project,
    TinkerCheckpoint,
    TinkerFuture,
    TinkerModel,
    TinkerSampler,
    TinkerSession,
)
from storage.sharing import usable_sampler_weights
from storage.states import check_transition
from training.jobs import fine_tuned_model_name
from training.tinker.checkpoints import parse_recipient
from training.tinker.futures import FutureStatus
from training.tinker.sessions import SESSION_IDLE_SECONDS, SessionStatus, is_live
from training.tinker.sessions import TRANSITIONS as SESSION_TRANSITIONS
from training.tinker.wire import BadRequest

# Active sessions one project may hold at once: a client that opens sessions in a loop must
# not fill the table.
MAX_ACTIVE_SESSIONS = 256
# Training runs one project may hold.
MAX_MODELS = 256
# A future's answer is kept this long for the SDK to fetch (it polls as soon as it submits).
FUTURE_TTL_SECONDS = 3600
# Requests of one run waiting for its trainer: a client that submits without waiting for
# answers must not fill the table (the SDK keeps a few in flight).
MAX_PENDING_PER_RUN = 64
# Samples one sampler may have under way (the SDK's own bound is 2,000 in flight; an RL
# step of 128 prompts x 16 samples sends 128).
MAX_PENDING_PER_SAMPLER = 512


def capabilities(settings: Settings) -> ServerCapabilities:
    """The bases a project can use here, as `/v1/models` lists them: the served ones (which
    sample), and where jobs may train bases that are not served, every prepared one."""
    served = settings.served_bases() or []
    return ServerCapabilities(supported_models=[
        SupportedModel(model_name=spec.name, max_context_length=spec.context_length,
                       sampleable=spec.name in served,
                       trainable=spec.name in served or settings.train_unserved_bases)
        for spec in base_models(settings).values()
        if spec.prepared and (spec.name in served or settings.train_unserved_bases)])


def _live(project_id: str, now: int) -> ColumnElement[bool]:
    return and_(TinkerSession.project_id == project_id,
                TinkerSession.status == SessionStatus.ACTIVE,
                TinkerSession.last_heartbeat_at > now - SESSION_IDLE_SECONDS)


def create_session(session: Session, project: Project, body: CreateSessionRequest) -> str:
    now = int(time.time())
    active = session.scalar(select(func.count()).select_from(TinkerSession)
                            .where(_live(project.id, now)))
    if (active or 0) >= MAX_ACTIVE_SESSIONS:
        raise APIError(429, f"This project has {MAX_ACTIVE_SESSIONS} active Tinker sessions, "
                       "the most it may hold; finish one (ServiceClient.close()) first.",
                       code="too_many_sessions")
    row = TinkerSession(id=new_id("session-"), project_id=project.id,
                        status=SessionStatus.ACTIVE, sdk_version=body.sdk_version,
                        tags=body.tags, user_metadata=body.user_metadata or {},
                        created_at=now, last_heartbeat_at=now)
    session.add(row)
    session.commit()
    return row.id


def _own(session: Session, project: Project, session_id: str) -> TinkerSession:
    row = session.scalar(select(TinkerSession).where(TinkerSession.id == session_id,
                                                     TinkerSession.project_id == project.id))
    if row is None:
        raise APIError(404, f"No session '{session_id}' in this project.", param="session_id",
                       code="session_not_found")
    return row


def heartbeat(session: Session, project: Project, session_id: str) -> None:
    """Keeps the session alive; a finished or expired one answers 410, which stops the
    SDK's heartbeat loop."""
    row = _live_session(session, project, session_id)
    session.execute(update(TinkerSession).where(TinkerSession.seq == row.seq)
                    .values(last_heartbeat_at=int(time.time())))
    session.commit()


def finish(session: Session, project: Project, session_id: str,
           body: FinishSessionRequest) -> None:
    """Ends the session; the first reason stays (a second finish changes nothing)."""
    row = _own(session, project, session_id)
    check_transition(SESSION_TRANSITIONS, [SessionStatus.ACTIVE], SessionStatus.FINISHED)
    # Fenced on the state read: two finishes racing, one writes.
    session.execute(update(TinkerSession)
                    .where(TinkerSession.seq == row.seq,
                           TinkerSession.status == SessionStatus.ACTIVE)
                    .values(status=SessionStatus.FINISHED, finish_reason=body.reason.type,
                            finished_at=int(time.time())))
    session.commit()


def _live_session(session: Session, project: Project, session_id: str) -> TinkerSession:
    row = _own(session, project, session_id)
    if not is_live(row):
        raise APIError(410, f"Session '{session_id}' has ended.", param="session_id",
                       code="session_ended")
    return row


def _expire(session: Session, project: Project, now: int) -> None:
    """The project's futures whose answers were kept long enough go."""
    session.execute(delete(TinkerFuture).where(
        TinkerFuture.project_id == project.id,
        TinkerFuture.created_at < now - FUTURE_TTL_SECONDS))


def _done(session: Session, project: Project, kind: str, model_id: str | None,
          result: dict[str, Any]) -> TinkerFuture:
    """A future whose work is already done (`result` is its answer)."""
    now = int(time.time())
    _expire(session, project, now)
    future = TinkerFuture(id=new_id("req-"), project_id=project.id, model_id=model_id,
                          kind=kind, status=FutureStatus.SUCCEEDED, result=result,
                          created_at=now, finished_at=now)
    session.add(future)
    return future


def create_model(session: Session, settings: Settings, project: Project,
                 body: CreateModelRequest) -> UntypedFuture:
    """A training run on `base_model` with a fresh LoRA; the same session and sequence
    number (a retried request) answer the same run."""
    _live_session(session, project, body.session_id)
    trainable = {m.model_name for m in capabilities(settings).supported_models if m.trainable}
    if body.base_model not in trainable:
        raise APIError(400, f"The base model '{body.base_model}' is not trained here; "
                       f"get_server_capabilities lists those that are.",
                       param="base_model", code="model_not_found")
    lora = body.lora_config
    if not (lora.train_mlp or lora.train_attn or lora.train_unembed):
        raise APIError(400, "At least one of train_mlp, train_attn or train_unembed must be "
                       "true.", param="lora_config")
    model_id = _new_run(session, project, body.session_id, body.model_seq_id, body.base_model,
                        lora.model_dump(), body.optimizer_config.model_dump(),
                        body.user_metadata or {})
    future = _done(session, project, "create_model", model_id,
                   {"type": "create_model", "model_id": model_id})
    session.commit()
    return UntypedFuture(request_id=future.id, model_id=model_id)


def _new_run(session: Session, project: Project, session_id: str, model_seq_id: int,
             base_model: str, lora_config: dict[str, Any], optimizer_config: dict[str, Any],
             user_metadata: dict[str, str]) -> str:
    """The run `{session}:train:{model_seq_id}`, added unless it exists (a retried create),
    as the SDK names it."""
    model_id = f"{session_id}:train:{model_seq_id}"
    row = session.scalar(select(TinkerModel).where(TinkerModel.id == model_id,
                                                   TinkerModel.project_id == project.id))
    if row is None:
        held = session.scalar(select(func.count()).select_from(TinkerModel)
                              .where(TinkerModel.project_id == project.id))
        if (held or 0) >= MAX_MODELS:
            raise APIError(429, f"This project has {MAX_MODELS} training runs, the most it "
                           "may hold; delete one first.", code="too_many_models")
        session.add(TinkerModel(
            id=model_id, project_id=project.id, session_id=session_id, base_model=base_model,
            lora_config=lora_config, optimizer_config=optimizer_config,
            user_metadata=user_metadata, created_at=int(time.time())))
    return model_id


def load_weights(session: Session, project: Project, body: LoadWeightsRequest) -> UntypedFuture:
    """A saved state into a run: an existing one (`model_id`, in its `seq_id` order), or a
    new one made by the load (`session_id` + `model_seq_id`: the run's first request)."""
    checkpoint = session.scalar(select(TinkerCheckpoint).where(
        TinkerCheckpoint.path == body.path, TinkerCheckpoint.project_id == project.id,
        TinkerCheckpoint.kind == "weights"))
    if checkpoint is None:
        raise APIError(404, f"No saved state '{body.path}' in this project (save_state makes "
                       "them).", param="path", code="checkpoint_not_found")
    request = {"checkpoint_id": checkpoint.id, "optimizer": body.optimizer}
    if body.model_id is not None:
        if body.session_id is not None or body.seq_id is None:
            raise APIError(400, "Load into a run with model_id and seq_id, or create one with "
                           "session_id and model_seq_id.", param="model_id")
        run = _own_model(session, project, body.model_id)
        if run.lora_config.get("rank") != checkpoint.lora_config.get("rank"):
            raise APIError(400, f"{body.path} has LoRA rank {checkpoint.lora_config['rank']}; "
                           f"this run's is {run.lora_config['rank']}.", param="path")
        return submit(session, project, "load_weights", body.model_id, body.seq_id,
                      request=request)
    if body.session_id is None or body.model_seq_id is None:
        raise APIError(400, "Load into a run with model_id and seq_id, or create one with "
                       "session_id and model_seq_id.", param="session_id")
    _live_session(session, project, body.session_id)
    if body.base_model is not None and body.base_model != checkpoint.base_model:
        raise APIError(400, f"{body.path} was trained on '{checkpoint.base_model}'.",
                       param="base_model")
    optimizer = body.optimizer_config.model_dump() if body.optimizer_config else {"type": "adamw"}
    model_id = _new_run(session, project, body.session_id, body.model_seq_id,
                        checkpoint.base_model, checkpoint.lora_config, optimizer,
                        body.user_metadata or {})
    # The load is the new run's request 0: its trainer does it before anything else.
    future, _ = _enqueue(session, project, "load_weights", model_id, 0, MAX_PENDING_PER_RUN,
                         request=request)
    return UntypedFuture(request_id=future.id, model_id=model_id)


def _own_model(session: Session, project: Project, model_id: str) -> TinkerModel:
    row = session.scalar(select(TinkerModel).where(TinkerModel.id == model_id,
                                                   TinkerModel.project_id == project.id))
    if row is None:
        raise APIError(404, f"No training run '{model_id}' in this project.",
                       param="model_id", code="model_not_found")
    return row


def get_info(session: Session, settings: Settings, project: Project,
             model_id: str) -> GetInfoResponse:
    row = _own_model(session, project, model_id)
    spec = base_models(settings).get(row.base_model)
    architectures = spec.config.get("architectures") if spec is not None else None
    return GetInfoResponse(
        model_id=row.id, lora_rank=int(row.lora_config["rank"]), model_name=row.base_model,
        optimizer_config=OptimizerConfig.model_validate(row.optimizer_config),
        model_data=ModelData(arch=architectures[0] if architectures else None,
                             model_name=row.base_model, tokenizer_id=row.base_model))


def future_result(session: Session, project: Project,
                  request_id: str) -> dict[str, Any] | bytes | None:
    """The future's answer as the SDK reads it (a result, or `{error, category}`); None
    while it is pending."""
    # Asked every 50 ms while a request is worked on: the status alone, never the request's
    # payload (up to 8 MiB), until there is an answer to read.
    where = (TinkerFuture.id == request_id, TinkerFuture.project_id == project.id)
    status = session.scalar(select(TinkerFuture.status).where(*where))
    if status is None:
        raise APIError(404, f"No request '{request_id}' in this project (or its answer "
                       f"expired after {FUTURE_TTL_SECONDS} s).", param="request_id",
                       code="request_not_found")
    if status == FutureStatus.PENDING:
        return None
    answer = session.execute(select(TinkerFuture.result_proto, TinkerFuture.result)
                             .where(*where)).one()
    # A forward_backward's answer is a protobuf; every other is the JSON the SDK reads.
    return answer.result_proto if answer.result_proto is not None else answer.result or {}


def _enqueue(session: Session, project: Project, kind: str, owner: str, seq_id: int,
             max_pending: int, *, request: dict[str, Any] | None = None,
             payload: bytes | None = None) -> tuple[TinkerFuture, bool]:
    """A pending future for `owner` (a run, or a sampler) and whether it is new: the same
    owner and `seq_id` (a submit the SDK retried) answer the same future."""
    same = select(TinkerFuture).where(TinkerFuture.model_id == owner,
                                      TinkerFuture.seq_id == seq_id)
    existing = session.scalar(same)
    if existing is not None:
        return existing, False
    pending = session.scalar(select(func.count()).select_from(TinkerFuture).where(
        TinkerFuture.model_id == owner, TinkerFuture.status == FutureStatus.PENDING))
    if (pending or 0) >= max_pending:
        raise APIError(429, f"'{owner}' has {max_pending} requests waiting, the most it may; "
                       "wait for their results.", code="too_many_requests")
    now = int(time.time())
    _expire(session, project, now)
    future = TinkerFuture(id=new_id("req-"), project_id=project.id, model_id=owner,
                          kind=kind, status=FutureStatus.PENDING, seq_id=seq_id,
                          request=request, payload=payload, created_at=now)
    session.add(future)
    try:
        session.commit()
    except IntegrityError:
        # The same submit, retried while the first was being stored: that one stands.
        session.rollback()
        if (existing := session.scalar(same)) is None:
            raise
        return existing, False
    return future, True


def submit(session: Session, project: Project, kind: str, model_id: str, seq_id: int, *,
           request: dict[str, Any] | None = None,
           payload: bytes | None = None) -> UntypedFuture:
    """A request for the run's trainer, pending until it is done."""
    run = _own_model(session, project, model_id)
    _live_session(session, project, run.session_id)
    future, _ = _enqueue(session, project, kind, model_id, seq_id, MAX_PENDING_PER_RUN,
                         request=request, payload=payload)
    return UntypedFuture(request_id=future.id, model_id=model_id)


def save_weights(session: Session, project: Project, body: SaveWeightsRequest) -> UntypedFuture:
    return submit(session, project, "save_weights", body.model_id, body.seq_id, request={
        "name": body.path, "ttl_seconds": body.ttl_seconds, "overwrite": body.overwrite,
        "user_metadata": body.user_metadata})


def save_weights_for_sampler(session: Session, project: Project,
                             body: SaveWeightsForSamplerRequest) -> UntypedFuture:
    if (body.path is None) == (body.sampling_session_seq_id is None):
        raise APIError(400, "Send either a path (a name for the weights) or a "
                       "sampling_session_seq_id, not both or neither.", param="path")
    return submit(session, project, "save_weights_for_sampler", body.model_id, body.seq_id,
                  request={"name": body.path, "ttl_seconds": body.ttl_seconds,
                           "sampling_session_seq_id": body.sampling_session_seq_id,
                           "user_metadata": body.user_metadata})


def save_weights_external(session: Session, project: Project,
                          body: SaveWeightsExternalRequest) -> UntypedFuture:
    recipients = body.age_encryption_recipients or []
    for recipient in recipients:
        try:
            parse_recipient(recipient)
        except BadRequest as exc:
            raise APIError(400, str(exc), param="age_encryption_recipients") from exc
    return submit(session, project, "save_weights_external", body.model_id, body.seq_id,
                  request={"name": body.path, "ttl_seconds": body.ttl_seconds,
                           "overwrite": True, "age_encryption_recipients": recipients})


def set_checkpoint_ttl(session: Session, project: Project, run_id: str, checkpoint_id: str,
                       ttl_seconds: int | None) -> None:
    """The checkpoint now expires `ttl_seconds` from now (None: kept until deleted)."""
    run = _own_model(session, project, run_id)
    row = session.scalar(select(TinkerCheckpoint).where(
        _live_checkpoints(project), TinkerCheckpoint.path == f"tinker://{run.id}/{checkpoint_id}"))
    if row is None:
        raise APIError(404, f"No checkpoint '{checkpoint_id}' in run '{run_id}'.",
                       param="checkpoint_id", code="checkpoint_not_found")
    row.expires_at = int(time.time()) + ttl_seconds if ttl_seconds else None
    session.commit()


def _own_sampler_checkpoint(session: Session, project: Project, path: str) -> TinkerCheckpoint:
    row = usable_sampler_weights(session, project.id, path)
    if row is None:
        raise APIError(404, f"No sampler weights '{path}' in this project "
                       "(save_weights_for_sampler makes them).", param="model_path",
                       code="model_not_found")
    return row


def create_sampling_session(session: Session, settings: Settings, project: Project,
                            body: CreateSamplingSessionRequest) -> str:
    """A sampler on a served base or on the project's sampler weights; the same session and
    number (a retried request) answer the same sampler."""
    _live_session(session, project, body.session_id)
    existing = session.scalar(select(TinkerSampler.id).where(
        TinkerSampler.session_id == body.session_id,
        TinkerSampler.session_seq_id == body.sampling_session_seq_id))
    if existing is not None:
        return existing
    if body.model_path is not None:
        base = _own_sampler_checkpoint(session, project, body.model_path).base_model
    elif body.base_model is not None:
        base = body.base_model
    else:
        raise APIError(400, "Name a base_model or a model_path to sample from.",
                       param="base_model")
    if base not in (settings.served_bases() or []):
        raise APIError(400, f"The base model '{base}' is not served here; "
                       "get_server_capabilities lists those that sample.",
                       param="base_model", code="model_not_found")
    sampler = TinkerSampler(id=new_id("sampler-"), project_id=project.id,
                            session_id=body.session_id,
                            session_seq_id=body.sampling_session_seq_id, base_model=base,
                            model_path=body.model_path, created_at=int(time.time()))
    session.add(sampler)
    session.commit()
    return sampler.id


def get_sampler(session: Session, project: Project, sampler_id: str) -> TinkerSampler:
    row = session.scalar(select(TinkerSampler).where(TinkerSampler.id == sampler_id,
                                                     TinkerSampler.project_id == project.id))
    if row is None:
        raise APIError(404, f"No sampler '{sampler_id}' in this project.",
                       param="sampling_session_id", code="sampler_not_found")
    return row


def sample(session: Session, project: Project,
           body: SampleRequest) -> tuple[UntypedFuture, TinkerSampler | None]:
    """A pending sample, and the sampler to run it on when it is new (None: a retried
    submit, already under way)."""
    sampler = get_sampler(session, project, body.sampling_session_id)
    session.expunge(sampler)
    future, new = _enqueue(session, project, "sample", sampler.id, body.seq_id,
                           MAX_PENDING_PER_SAMPLER)
    ids = [f"{future.id}:{i}" for i in range(body.num_samples)]
    return (UntypedFuture(request_id=future.id, sample_sequence_ids=ids),
            sampler if new else None)


# A checkpoint's kind here, as the SDK types it.
CHECKPOINT_TYPES: dict[str, Literal["training", "sampler", "external"]] = {
    "weights": "training", "sampler": "sampler", "external": "external"}


def _checkpoint_view(row: TinkerCheckpoint) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=row.path.split("/", 3)[3], tinker_path=row.path,
        checkpoint_type=CHECKPOINT_TYPES[row.kind],
        time=datetime.fromtimestamp(row.created_at, UTC), size_bytes=row.size_bytes,
        user_metadata=row.user_metadata or None,
        expires_at=datetime.fromtimestamp(row.expires_at, UTC) if row.expires_at else None)


def _live_checkpoints(project: Project) -> ColumnElement[bool]:
    return and_(TinkerCheckpoint.project_id == project.id,
                or_(TinkerCheckpoint.expires_at.is_(None),
                    TinkerCheckpoint.expires_at > int(time.time())))


def _run_view(session: Session, project: Project, run: TinkerModel) -> TrainingRun:
    latest = {kind: session.scalar(select(TinkerCheckpoint).where(
        _live_checkpoints(project), TinkerCheckpoint.model_id == run.id,
        TinkerCheckpoint.kind == kind).order_by(TinkerCheckpoint.seq.desc()).limit(1))
        for kind in ("weights", "sampler")}
    last = session.scalar(select(func.max(TinkerFuture.created_at))
                          .where(TinkerFuture.model_id == run.id)) or run.created_at
    return TrainingRun(
        training_run_id=run.id, base_model=run.base_model, model_owner=project.name,
        lora_rank=int(run.lora_config["rank"]),
        last_request_time=datetime.fromtimestamp(last, UTC),
        last_checkpoint=_checkpoint_view(latest["weights"]) if latest["weights"] else None,
        last_sampler_checkpoint=(_checkpoint_view(latest["sampler"])
                                 if latest["sampler"] else None),
        user_metadata=run.user_metadata or None)


def list_runs(session: Session, project: Project, limit: int, offset: int) -> TrainingRunsResponse:
    """The project's training runs, newest first."""
    total = session.scalar(select(func.count()).select_from(TinkerModel)
                           .where(TinkerModel.project_id == project.id)) or 0
    rows = session.scalars(select(TinkerModel).where(TinkerModel.project_id == project.id)
                           .order_by(TinkerModel.seq.desc()).offset(offset).limit(limit))
    return TrainingRunsResponse(training_runs=[_run_view(session, project, r) for r in rows],
                                cursor=Cursor(offset=offset, limit=limit, total_count=total))


def get_run(session: Session, project: Project, run_id: str) -> TrainingRun:
    return _run_view(session, project, _own_model(session, project, run_id))


def list_checkpoints(session: Session, project: Project, run_id: str) -> CheckpointsListResponse:
    run = _own_model(session, project, run_id)
    rows = session.scalars(select(TinkerCheckpoint).where(
        _live_checkpoints(project), TinkerCheckpoint.model_id == run.id)
        .order_by(TinkerCheckpoint.seq))
    return CheckpointsListResponse(checkpoints=[_checkpoint_view(r) for r in rows])


def delete_checkpoint(session: Session, project: Project, run_id: str,
                      checkpoint_id: str) -> TinkerCheckpoint:
    """Deletes the checkpoint's row and answers it (its blobs and any served copy are the
    caller's to drop)."""
    run = _own_model(session, project, run_id)
    path = f"tinker://{run.id}/{checkpoint_id}"
    row = session.scalar(select(TinkerCheckpoint).where(
        TinkerCheckpoint.path == path, TinkerCheckpoint.project_id == project.id))
    if row is None:
        raise APIError(404, f"No checkpoint '{checkpoint_id}' in run '{run_id}'.",
                       param="checkpoint_id", code="checkpoint_not_found")
    session.delete(row)
    session.commit()
    return row


def weights_info(session: Session, project: Project, path: str) -> WeightsInfoResponse:
    row = session.scalar(select(TinkerCheckpoint).where(
        _live_checkpoints(project), TinkerCheckpoint.path == path))
    if row is None:
        raise APIError(404, f"No checkpoint '{path}' in this project.", param="tinker_path",
                       code="checkpoint_not_found")
    lora = row.lora_config
    return WeightsInfoResponse(base_model=row.base_model, lora_rank=int(lora["rank"]),
                               train_unembed=lora.get("train_unembed"),
                               train_mlp=lora.get("train_mlp"),
                               train_attn=lora.get("train_attn"))


def promote(session: Session, store: BlobStore, project: Project, run_id: str,
            checkpoint_id: str, suffix: str | None) -> str:
    """Sampler weights made an `ft:` model of the project, which chat, the models list,
    sharing and export handle as a job's: the adapter is copied (deleting the checkpoint
    later leaves the model whole)."""
    run = _own_model(session, project, run_id)
    path = f"tinker://{run.id}/{checkpoint_id}"
    checkpoint = session.scalar(select(TinkerCheckpoint).where(
        _live_checkpoints(project), TinkerCheckpoint.path == path,
        TinkerCheckpoint.kind == "sampler"))
    if checkpoint is None:
        raise APIError(404, f"No sampler weights '{checkpoint_id}' in run '{run_id}' "
                       "(save_weights_for_sampler makes them).", param="checkpoint_id",
                       code="checkpoint_not_found")
    prefix = adapter_prefix(project.id, f"tinker-{checkpoint.id}-{random_token(6)}")
    for key in store.list_keys(checkpoint.blob_prefix):
        name = key[len(checkpoint.blob_prefix):]
        if name in ADAPTER_FILES:
            store.put(prefix + name, store.read(key))
    name = fine_tuned_model_name(checkpoint.base_model, project.name, suffix)
    session.add(FineTunedModel(id=name, project_id=project.id, job_id=checkpoint.id,
                               base_model=checkpoint.base_model, adapter_prefix=prefix,
                               created_at=int(time.time())))
    session.commit()
    return name
