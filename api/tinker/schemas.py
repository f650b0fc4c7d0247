"""Request and response bodies of the Tinker API, as the SDK sends and validates them. Every
string and list a client sends is bounded; fields the SDK adds later are ignored."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.fine_tuning.jobs.schemas import SUFFIX

# The SDK sends its version with every config and session request.
SdkVersion = Field(max_length=64)


class TinkerRequest(BaseModel):
    # Fields a newer SDK adds are ignored rather than refused, as the SDK ignores new ones.
    model_config = ConfigDict(extra="ignore")


class ClientConfigRequest(TinkerRequest):
    sdk_version: str = SdkVersion


class ClientConfig(BaseModel):
    """The feature flags the SDK reads once per client (unknown ones it ignores): what this
    server implements, the rest off."""

    pjwt_auth_enabled: bool = False
    # Plain httpx on the client: the SDK's pyqwest transport is not needed on a self-hosted,
    # usually loopback or LAN, deployment.
    use_pyqwest_transport: bool = False
    parallel_fwdbwd_chunks: bool = True
    # The SDK's own default, announced: forward_backward bodies are capped a little above it
    # (training/tinker/wire.py).
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    proto_compress_fwdbwd: bool = False
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False


class DynamicConfig(BaseModel):
    refresh_interval_sec: int = 300
    sample_cancel_enabled: bool = False


Tag = Annotated[str, StringConstraints(max_length=128)]
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class CreateSessionRequest(TinkerRequest):
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    # As OpenAI's `metadata`: at most 16 pairs.
    user_metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    sdk_version: str = SdkVersion
    project_id: str | None = Field(default=None, max_length=64)
    display_name: str | None = Field(default=None, max_length=256)
    type: Literal["create_session"] = "create_session"


class CreateSessionResponse(BaseModel):
    type: Literal["create_session"] = "create_session"
    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None


class SessionHeartbeatRequest(TinkerRequest):
    session_id: str = Field(max_length=64)
    type: Literal["session_heartbeat"] = "session_heartbeat"


class SessionHeartbeatResponse(BaseModel):
    type: Literal["session_heartbeat"] = "session_heartbeat"


class FinishReason(TinkerRequest):
    type: Literal["success", "errored", "interrupted"]


class FinishSessionRequest(TinkerRequest):
    reason: FinishReason
    detail: str | None = Field(default=None, max_length=4096)


class SupportedModel(BaseModel):
    model_name: str
    max_context_length: int | None = None
    trainable: bool
    sampleable: bool


class ServerCapabilities(BaseModel):
    supported_models: list[SupportedModel]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class LoraConfig(TinkerRequest):
    rank: int = Field(ge=1, le=64)
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class OptimizerConfig(TinkerRequest):
    # AdamW is the optimizer trained here; the SDK's `dimuon` is refused by name.
    type: Literal["adamw"] = "adamw"


class CreateModelRequest(TinkerRequest):
    # `model_*` fields are the SDK's own names.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    session_id: str = Field(max_length=64)
    model_seq_id: int = Field(ge=0, le=2**31)
    base_model: str = Field(max_length=256)
    user_metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    lora_config: LoraConfig
    optimizer_config: OptimizerConfig = OptimizerConfig()
    type: Literal["create_model"] = "create_model"


class UntypedFuture(BaseModel):
    """What every request that does work answers at once: the id to poll for its result."""

    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_id: str | None = None
    # A sample's: one id per sequence it will return.
    sample_sequence_ids: list[str] | None = None


class RetrieveFutureRequest(TinkerRequest):
    request_id: str = Field(max_length=64)
    allow_metadata_only: bool = False


class TryAgain(BaseModel):
    """A future not done yet: the SDK asks again."""

    type: Literal["try_again"] = "try_again"
    request_id: str
    queue_state: Literal["active", "paused_capacity", "paused_rate_limit"] = "active"


class GetInfoRequest(TinkerRequest):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str = Field(max_length=128)
    type: Literal["get_info"] = "get_info"


class ModelData(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    arch: str | None = None
    model_name: str
    tokenizer_id: str


class GetInfoResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    type: Literal["get_info"] = "get_info"
    model_id: str
    model_data: ModelData
    is_lora: bool = True
    lora_rank: int
    model_name: str
    optimizer_config: OptimizerConfig


class AdamParams(TinkerRequest):
    """One optimizer step's numbers, as the SDK's AdamParams (its defaults)."""

    learning_rate: float = Field(default=1e-4, ge=0, le=1)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-12, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    # 0: no clipping.
    grad_clip_norm: float = Field(default=0.0, ge=0)


class OptimStepRequest(TinkerRequest):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    # The SDK sends `adam_params` (`optimizer_params` for other optimizers, refused here).
    adam_params: AdamParams
    model_id: str = Field(max_length=128)
    seq_id: int = Field(ge=0, le=2**62)
    type: Literal["optim_step"] = "optim_step"


# A checkpoint's name: it becomes part of a `tinker://` path.
CheckpointName = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                                  pattern=r"^[A-Za-z0-9._-]+$")]
# 1 hour to 10 years, as the SDK documents; None keeps it until deleted.
TtlSeconds = Annotated[int, Field(ge=3600, le=10 * 365 * 86400)]


class SaveWeightsRequest(TinkerRequest):
    """`TrainingClient.save_state(name)`: the LoRA and the optimizer, to load again."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str = Field(max_length=128)
    path: CheckpointName
    seq_id: int = Field(ge=0, le=2**62)
    ttl_seconds: TtlSeconds | None = None
    overwrite: bool = False
    user_metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    type: Literal["save_weights"] = "save_weights"


class SaveWeightsForSamplerRequest(TinkerRequest):
    """`save_weights_for_sampler(name)`, or without a name (`sampling_session_seq_id` set)
    `save_weights_and_get_sampling_client()`: the LoRA, for sampling."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str = Field(max_length=128)
    path: CheckpointName | None = None
    sampling_session_seq_id: int | None = Field(default=None, ge=0, le=2**62)
    seq_id: int = Field(ge=0, le=2**62)
    ttl_seconds: TtlSeconds | None = None
    user_metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    type: Literal["save_weights_for_sampler"] = "save_weights_for_sampler"


class SaveWeightsExternalRequest(TinkerRequest):
    """`save_weights_external(name)`: the LoRA for the client to download (its signed URLs:
    `get_external_weights_urls`), each file age-encrypted to `age_encryption_recipients`."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str = Field(max_length=128)
    path: CheckpointName
    seq_id: int = Field(ge=0, le=2**62)
    ttl_seconds: TtlSeconds | None = None
    # At most 10, as the SDK documents: `age1...` keys or SSH public keys.
    age_encryption_recipients: list[Annotated[str, StringConstraints(
        min_length=1, max_length=4096)]] | None = Field(default=None, max_length=10)
    type: Literal["save_weights_external"] = "save_weights_external"


class CheckpointTtlRequest(BaseModel):
    """`set_checkpoint_ttl_from_tinker_path`: expires that long from now; None keeps it."""

    ttl_seconds: TtlSeconds | None = None


class ExternalWeightsUrls(BaseModel):
    # Each file's signed URL (no key needed), by its name in the checkpoint.
    urls: dict[str, str]
    expires: datetime


TinkerPath = Annotated[str, StringConstraints(max_length=512, pattern=r"^tinker://")]


class CreateSamplingSessionRequest(TinkerRequest):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    session_id: str = Field(max_length=64)
    sampling_session_seq_id: int = Field(ge=0, le=2**62)
    base_model: str | None = Field(default=None, max_length=256)
    model_path: TinkerPath | None = None
    type: Literal["create_sampling_session"] = "create_sampling_session"


class CreateSamplingSessionResponse(BaseModel):
    type: Literal["create_sampling_session"] = "create_sampling_session"
    sampling_session_id: str


class GetSamplerResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    sampler_id: str
    base_model: str
    model_path: str | None = None


class EncodedText(TinkerRequest):
    type: Literal["encoded_text"] = "encoded_text"
    # Token ids; bounded again by the base's context length.
    tokens: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(max_length=131072)


class ModelInput(TinkerRequest):
    # Text only: an image or audio chunk is refused by its `type`.
    chunks: list[EncodedText] = Field(min_length=1, max_length=256)


class SamplingParams(TinkerRequest):
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    seed: int | None = None
    # A string, strings, or token ids; None keeps stopping at EOS, [] does not stop at all.
    stop: (Annotated[str, StringConstraints(max_length=256)]
           | Annotated[list[Annotated[str, StringConstraints(max_length=256)]],
                       Field(max_length=16)]
           | Annotated[list[Annotated[int, Field(ge=0, lt=2**31)]], Field(max_length=16)]
           | None) = None
    temperature: float = Field(default=1.0, ge=0, le=100)
    top_k: int = Field(default=-1, ge=-1)
    top_p: float = Field(default=1.0, gt=0, le=1)


class SampleRequest(TinkerRequest):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    sampling_session_id: str = Field(max_length=64)
    seq_id: int = Field(ge=0, le=2**62)
    num_samples: int = Field(default=1, ge=1, le=128)
    prompt: ModelInput
    sampling_params: SamplingParams
    prompt_logprobs: bool | None = None
    # Top-k logprobs are not computed here: 0 only.
    topk_prompt_logprobs: int = Field(default=0, ge=0, le=0)
    topk_sample_logprobs: int = Field(default=0, ge=0, le=0)
    prompt_alt_tokens_k: int = Field(default=0, ge=0, le=0)
    type: Literal["sample"] = "sample"


class LoadWeightsRequest(TinkerRequest):
    """`load_state(path)` into a run (`model_id` + `seq_id`), or
    `create_training_client_from_state[_with_optimizer](path)`: a new run made by the load
    (`session_id` + `model_seq_id`), shaped as the saved one."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str | None = Field(default=None, max_length=128)
    seq_id: int | None = Field(default=None, ge=0, le=2**62)
    session_id: str | None = Field(default=None, max_length=64)
    model_seq_id: int | None = Field(default=None, ge=0, le=2**31)
    base_model: str | None = Field(default=None, max_length=256)
    user_metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    path: TinkerPath
    optimizer: bool
    optimizer_config: OptimizerConfig | None = None
    type: Literal["load_weights"] = "load_weights"


class Checkpoint(BaseModel):
    # `weights/{name}`, `sampler_weights/{name}` or `external_weights/{name}`, as the SDK
    # parses paths.
    checkpoint_id: str
    checkpoint_type: Literal["training", "sampler", "external"]
    time: datetime
    tinker_path: str
    size_bytes: int | None = None
    public: bool = False
    user_metadata: dict[str, str] | None = None
    expires_at: datetime | None = None


class Cursor(BaseModel):
    offset: int
    limit: int
    total_count: int


class TrainingRun(BaseModel):
    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool = True
    corrupted: bool = False
    lora_rank: int | None = None
    last_request_time: datetime
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


class TrainingRunsResponse(BaseModel):
    training_runs: list[TrainingRun]
    cursor: Cursor


class CheckpointsListResponse(BaseModel):
    checkpoints: list[Checkpoint]
    cursor: Cursor | None = None


class WeightsInfoRequest(TinkerRequest):
    tinker_path: TinkerPath


class WeightsInfoResponse(BaseModel):
    base_model: str
    optimizer_config: OptimizerConfig = OptimizerConfig()
    is_lora: bool = True
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None


# As a job's `suffix`: part of the model's `:`-separated name.
Suffix = Annotated[str, Field(min_length=1, max_length=64, pattern=SUFFIX)]


class PromoteRequest(TinkerRequest):
    """tuneserve's own: sampler weights made an `ft:` model (OpenAI's `suffix` shape)."""

    suffix: Suffix | None = None


class PromoteResponse(BaseModel):
    # The `ft:` model's name, as /v1/models lists it and chat completions take it.
    model: str
