"""Metadata tables. Public ids are random strings; `seq` orders rows for cursor pagination."""

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, mapped_column

from storage.states import EnumString, JobStatus

# SQLite only auto-increments an INTEGER PRIMARY KEY.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


def max_chars(column: InstrumentedAttribute[str]) -> int:
    """The most characters a `String(n)` column holds (PostgreSQL refuses longer values)."""
    kind = column.type
    assert isinstance(kind, String) and kind.length is not None, f"{column} has no length"
    return kind.length


class Project(Base):
    __tablename__ = "projects"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # sha256 of the secret: keys are 192-bit random, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Revoked keys stay (never reused, and the key store is not "empty" for bootstrap).
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The fine-tuning job whose worker minted it (storage/api_keys.py); None for a person's.
    job_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Upload(Base):
    __tablename__ = "uploads"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    # `expires_after.seconds` for the File the upload becomes.
    file_expires_after: Mapped[int | None] = mapped_column(BigInteger, default=None)
    file_id: Mapped[str | None] = mapped_column(String(64), default=None)


class UploadPart(Base):
    __tablename__ = "upload_parts"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), index=True
    )
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class FineTuningJob(Base):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index("ix_jobs_project_seq", "project_id", "seq"),
        Index("ix_jobs_status", "status"),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # A base's name, or a fine-tuned model's (as long as `fine_tuned_models.id`).
    model: Mapped[str] = mapped_column(String(512))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    seed: Mapped[int] = mapped_column(BigInteger)
    # The base model the adapter trains on: `model` itself, or, when `model` names one of the
    # project's fine-tuned models (training continues from its adapter), that model's base.
    base_model: Mapped[str] = mapped_column(String(256))
    # {"type": ..., type: {"hyperparameters": {...}}}: as sent, then with "auto" resolved.
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    user_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, default=None)
    integrations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # Read back as the enum; stored as its string (the column is a VARCHAR(32) as before).
    status: Mapped[JobStatus] = mapped_column(EnumString(JobStatus, 32))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Decided at creation (checkpoints are named after it); shown once the job succeeds.
    model_name: Mapped[str] = mapped_column(String(512))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, default=None)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Base vs fine-tuned scores on the validation file, written when the job succeeds.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    @property
    def parent_model(self) -> str | None:
        """The fine-tuned model this job continues from, if any."""
        return self.model if self.model != self.base_model else None
    # From validation: what one epoch holds.
    n_examples: Mapped[int | None] = mapped_column(BigInteger, default=None)
    n_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Where the current attempt runs (executor description); None when nobody holds the job.
    worker: Mapped[str | None] = mapped_column(String(256), default=None)
    # The holder's last sign of life: a worker's heartbeat, or a validation's lease.
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The fencing token: bumped each time someone takes the job (a validation or a worker);
    # every write a holder makes is conditional on it, so a holder that lost the job
    # cannot change it.
    attempt: Mapped[int] = mapped_column(BigInteger, default=0)
    # Workers lost and restarted so far (bounded by TUNESERVE_MAX_JOB_RECOVERIES).
    recoveries: Mapped[int] = mapped_column(BigInteger, default=0)
    # A queued job is not started before this time (epoch seconds; None: at once): a worker
    # that met a storage or DB outage waits for it to pass.
    not_before: Mapped[float | None] = mapped_column(Float, default=None)
    # Blob key of the manifest of the newest complete resumable state; written last.
    resume_state: Mapped[str | None] = mapped_column(String(512), default=None)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int | None] = mapped_column(BigInteger, default=None)


class JobEvent(Base):
    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (Index("ix_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class JobCheckpoint(Base):
    __tablename__ = "fine_tuning_job_checkpoints"
    __table_args__ = (Index("ix_checkpoints_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    step_number: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))


class FineTunedModel(Base):
    """A servable adapter: a job's final model or one of its checkpoints."""

    __tablename__ = "fine_tuned_models"
    __table_args__ = (Index("ix_models_project", "project_id"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    # The name clients use: ft:{base}:{project}:{suffix}:{short id}[:ckpt-step-N]
    id: Mapped[str] = mapped_column(String(512), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(256))
    # Blob prefix holding the PEFT adapter (adapter_config.json, adapter_model.safetensors…).
    adapter_prefix: Mapped[str] = mapped_column(String(512))
    checkpoint_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)



class CheckpointPermission(Base):
    """Another project may use this fine-tuned model (a checkpoint or a final model): chat
    with it and fine-tune from it. Granted and revoked by the owning project."""

    __tablename__ = "checkpoint_permissions"
    __table_args__ = (UniqueConstraint("model_id", "project_id"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuned_models.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)

class ServingReplica(Base):
    """A vLLM replica on the cluster, as it announces itself: API nodes route to the replicas
    whose `beats` keep rising. A replica that restarts writes a new generation, address and
    key; one that stops beating is routed nothing."""

    __tablename__ = "serving_replicas"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(256))
    # http://host:port of its vLLM server and the key it asks for (made at each start).
    url: Mapped[str] = mapped_column(String(512))
    api_key: Mapped[str] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(BigInteger)
    # Counts the health checks it passed since it started; readers compare it to itself only
    # (no clocks of two machines compared).
    beats: Mapped[int] = mapped_column(BigInteger, default=0)
    # Adapters it keeps registered at once.
    adapter_slots: Mapped[int] = mapped_column(BigInteger)
    # The served names in its node's adapter cache on disk, newest first and at most
    # `serving.ray_replicas.ANNOUNCED_LIMIT`: the router's disk tier (a load, not a fetch).
    disk_adapters: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The served names its vLLM has registered (host memory), whichever API node loaded them.
    host_adapters: Mapped[list[str]] = mapped_column(JSON, default=list)


class RateWindow(Base):
    """What one project asked of the models in one minute (`window`: minutes since the
    epoch), counted by every API node in one row: the rate limits hold across nodes."""

    __tablename__ = "rate_windows"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_project_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # `whsec_…`, readable (unlike API keys, which are hashed): every API node signs with
    # it. The API shows it only when it is made (create, rotate_secret).
    secret: Mapped[str] = mapped_column(String(128))
    # The secret a rotation replaced, still signed with until `previous_secret_expires_at`.
    previous_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_secret_expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction that made the
    event happen, then sent (and retried) by any API node's dispatcher."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    # The `webhook-id` header: the same on every attempt, so a receiver can drop repeats.
    id: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact body, so that every attempt signs and sends the same bytes.
    payload: Mapped[str] = mapped_column(Text)
    # pending -> delivered (a 2xx) | failed (given up).
    status: Mapped[str] = mapped_column(String(16))
    # Attempts started; a dispatcher's claim bumps it, and what it records afterwards is
    # conditional on it (fencing), so a claim that outlived its lease changes nothing.
    attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    # When a dispatcher may take it next: the retry's time, or the end of a claim's lease.
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class WebhookDeliveryAttempt(Base):
    __tablename__ = "webhook_delivery_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(BigInteger)
    attempted_at: Mapped[int] = mapped_column(BigInteger)
    # The receiver's status, or why there was none (refused, unreachable, timed out).
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class CursorTombstone(Base):
    """Where a deleted row stood in its list: a client paging with `after=` the id of an
    object deleted meanwhile (deleting what it lists, or a checkpoint pruned) goes on from
    there instead of getting a 400. Kept a day (`storage/tombstones.py`)."""

    __tablename__ = "cursor_tombstones"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))  # the row's table: seq is per table
    # The list's owner (project, job, model): as long as the longest of their ids, a
    # model's (`storage.tombstones.SCOPES`).
    scope: Mapped[str] = mapped_column(String(512))
    seq: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[float] = mapped_column(Float, index=True)


class StoredResponse(Base):
    """A response of `/v1/responses` kept for `previous_response_id` and `GET
    /v1/responses/{id}` (the replicas keep nothing: any API node may be asked for it)."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_project_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    # vLLM's id for it (`resp_` and 32 hex digits).
    id: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    previous_response_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # Responses in its chain, itself included: 1 without a previous response.
    depth: Mapped[int] = mapped_column(Integer)
    # The request's own input items, as sent (a string input as one user message), and the id
    # each is listed under.
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    input_item_ids: Mapped[list[str]] = mapped_column(JSON)
    # The response object, as the client got it.
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class TinkerSession(Base):
    """A Tinker SDK client's session (`POST /api/v1/create_session`): what it trains and
    samples hangs off it, and its heartbeats say the client is still there. States:
    `api.tinker.sessions.SessionStatus`."""

    __tablename__ = "tinker_sessions"
    __table_args__ = (Index("ix_tinker_sessions_project_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    sdk_version: Mapped[str] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(JSON)
    user_metadata: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_heartbeat_at: Mapped[int] = mapped_column(BigInteger)
    # How the client said it ended (success, errored, interrupted), once, first wins.
    finish_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class TinkerModel(Base):
    """A LoRA being trained through the Tinker API (`POST /api/v1/create_model`): a training
    run, in the SDK's words. Its id is `{session}:train:{model_seq_id}`, as the SDK itself
    names one it creates by loading state."""

    __tablename__ = "tinker_models"
    __table_args__ = (Index("ix_tinker_models_project_seq", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(256))
    # rank, seed, train_mlp, train_attn, train_unembed, as the SDK sent them.
    lora_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    optimizer_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    user_metadata: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # The trainer process that holds the run's weights (training/tinker/trainer.py): each new
    # one takes the next attempt, and one whose attempt is no longer this stops. It beats
    # `trainer_beat_at`; a silent one is replaced.
    trainer_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    trainer_beat_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class TinkerFuture(Base):
    """One Tinker request's result, which the SDK polls for (`POST /api/v1/retrieve_future`):
    pending until its work is done, then its answer (or its error) as the SDK reads it."""

    __tablename__ = "tinker_futures"
    __table_args__ = (Index("ix_tinker_futures_project_seq", "project_id", "seq"),
                      # A retried request (same run, same seq_id) is the same future.
                      UniqueConstraint("model_id", "seq_id", name="uq_tinker_futures_model_seq"))

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[str | None] = mapped_column(String(128), default=None)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Requests the run's trainer executes, in the training client's `seq_id` order.
    seq_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # What the trainer needs: the request's JSON fields, and a forward_backward's protobuf
    # body (decompressed); both dropped once the request is done.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # A forward_backward's answer, as the SDK reads it: a ForwardBackwardOutput protobuf.
    result_proto: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class TinkerCheckpoint(Base):
    """Weights a Tinker run saved: `weights` (save_state: the LoRA and the optimizer, to load
    and train on) or `sampler` (save_weights_for_sampler: the LoRA alone, which serving loads
    like a job's adapter). Its name to clients is `path`:
    `tinker://{run}/{weights|sampler_weights}/{name}`."""

    __tablename__ = "tinker_checkpoints"
    __table_args__ = (Index("ix_tinker_checkpoints_project_seq", "project_id", "seq"),
                      Index("ix_tinker_checkpoints_model", "model_id"))

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512), unique=True)
    base_model: Mapped[str] = mapped_column(String(256))
    # The run's LoRA shape, which a run created by loading this checkpoint takes.
    lora_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Blob prefix of the PEFT adapter (and, for `weights`, optimizer.pt).
    blob_prefix: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    user_metadata: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # None: kept until deleted.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # An `external` checkpoint's: signs its download URLs (never shown; gone with the row).
    download_secret: Mapped[str | None] = mapped_column(String(64), default=None)


class TinkerSampler(Base):
    """A Tinker sampling session (`create_sampling_session`, or save_weights_for_sampler
    without a name): what `asample` requests sample from, a base or a sampler checkpoint."""

    __tablename__ = "tinker_samplers"
    __table_args__ = (UniqueConstraint("session_id", "session_seq_id",
                                       name="uq_tinker_samplers_session_seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))
    session_seq_id: Mapped[int] = mapped_column(BigInteger)
    base_model: Mapped[str] = mapped_column(String(256))
    # The sampler checkpoint's path; None: the base itself.
    model_path: Mapped[str | None] = mapped_column(String(512), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
