"""All of the API's settings, from `TUNESERVE_*` environment variables."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from api.tenancy import MIN_BOOTSTRAP_KEY_LENGTH
from serving.settings import ServingSettings
from training.settings import TrainingSettings

MiB = 1 << 20


class Settings(TrainingSettings, ServingSettings):
    host: str = Field("127.0.0.1", description="Where the API listens: the address.")
    port: int = Field(8000, description="Where the API listens: the port.")
    bootstrap_api_key: str | None = Field(
        None,
        description=(
            "Creates the default project with this key when the key store is empty; at least 32 "
            "characters (a short, chosen key is guessable; a shorter one is refused at start). "
            "Unset: the first start writes a new key to `{data_dir}/api_key`."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description=(
            "`text` lines, or `json`: one JSON object a line (`time`, `level`, `logger`, "
            "`request_id`, `message`, `exception`) for a log pipeline."
        ),
    )
    default_project: str = Field("default", description="The project the first start creates.")
    max_file_bytes: int = Field(
        512 * MiB,
        description="Largest `POST /v1/files` body; larger ones get 413 (use the Uploads API).",
    )
    max_upload_bytes: int = Field(8 * 1024 * MiB, description="Largest Upload (`/v1/uploads`).")
    max_part_bytes: int = Field(
        64 * MiB,
        description=(
            "Largest Upload part. The openai client's `upload_file_chunked` sends 64 MiB parts."
        ),
    )
    upload_ttl_seconds: int = Field(
        3600,
        description="Pending Uploads expire after this many seconds.",
    )
    max_pending_uploads_per_project: int = Field(
        100,
        description=(
            "Uploads one project may have in progress at once; past it, creating one is a 400 "
            "`upload_limit_reached` (0: no limit). Each may hold up to twice its bytes in parts "
            "until it completes, is cancelled or expires."
        ),
    )
    max_inference_body_bytes: int = Field(
        16 * MiB,
        description=(
            "Largest request body of chat, completions and responses requests, refused (413) as it "
            "arrives, by its declared length before a byte is read, before it is parsed or "
            "buffered."
        ),
    )
    max_control_body_bytes: int = Field(
        1 * MiB,
        description=(
            "Largest JSON body of every other route, refused (413) as it arrives; file uploads "
            "have their own limits."
        ),
    )
    rate_limit_requests_per_minute: int = Field(
        0,
        description=(
            "Per project, across all API nodes (counted in the DB, one-minute windows): "
            "chat/completions/responses requests per minute; past it a 429 of type `requests` with "
            "`retry-after`; every answer carries OpenAI's `x-ratelimit-*` headers. 0: no limit."
        ),
    )
    rate_limit_tokens_per_minute: int = Field(
        0,
        description=(
            "Per project, across all API nodes: tokens per minute on the model routes (the "
            "prompt's estimate at 4 characters a token + `n` x max tokens, 256 when unset); past "
            "it a 429 of type `tokens` with `retry-after`. 0: no limit."
        ),
    )
    max_project_stored_bytes: int = Field(
        0,
        description=(
            "Bytes a project may store, over every API node: its files, its stored responses, and "
            "its uploads in progress (an Upload reserves its `bytes` when it is created; parts "
            "sent beyond them count too); a file, upload, part or response to store past it is a "
            "403 `storage_quota_exceeded`. 0: no limit."
        ),
    )
    max_stored_response_bytes: int = Field(
        1 * MiB,
        description=(
            "Largest stored response of `/v1/responses` (its input items and the response "
            "object, as JSON): a request whose input alone is larger is a 400 naming `input` "
            "unless it sends `store: false`; a response whose output takes it past this is "
            "answered but not stored. Stored responses count towards "
            "`max_project_stored_bytes`."
        ),
    )
    response_retention_days: int = Field(
        30,
        ge=0,
        description=(
            "Days a stored response of `/v1/responses` is kept (OpenAI keeps them 30 days); the "
            "reaper deletes older ones, and a `previous_response_id` naming one is then a 400. "
            "0: kept until deleted."
        ),
    )
    max_response_chain: int = Field(
        100,
        description=(
            "Most responses one `previous_response_id` chain may hold, the new one included; "
            "a request that would make it longer is a 400 naming `previous_response_id`."
        ),
    )
    max_event_streams_per_project: int = Field(
        20,
        description=(
            "Job event streams (`?stream=true`) one project may hold open on one API node; one "
            "more is a 429 naming `stream` (0: no limit). Each polls the DB twice a second while "
            "it is open."
        ),
    )
    event_stream_paused_idle_seconds: float = Field(
        60.0,
        description=(
            "The stream of a paused job (which may wait for days) ends once it has sent nothing "
            "for this long; clients reconnect after its last event, as after any lost stream."
        ),
    )
    reaper_interval_seconds: float = Field(
        60.0,
        description=(
            "How often expired files and uploads (and ended rate-limit windows) are swept away."
        ),
    )
    log_retention_days: float = Field(
        14.0,
        description=(
            "Logs under `{data_dir}/logs` (workers', the engine's rotated ones) nothing wrote to "
            "for this long are deleted; the engine's `vllm.log` is rotated at a start past 64 MiB "
            "(3 kept); a worker removes the work dirs its job's killed earlier attempts left on "
            "its node."
        ),
    )
    orphan_grace_seconds: float = Field(
        86400.0,
        description=(
            "Blobs no live row accounts for (a file without its row, a finished upload's parts, a "
            "finished job's training state, an adapter no model names and no active job is "
            "writing; unfinished local writes: left by a crash between a blob and its row) are "
            "deleted once older than this (`api/background/orphans.py`)."
        ),
    )
    orphan_sweep_interval_seconds: float = Field(
        3600.0,
        description="How often the blob store is walked for orphaned blobs.",
    )
    eval_on_engine: bool = Field(
        True,
        description=(
            "The built-in evaluation of a job on a base that this deployment serves is answered by "
            "the serving engine (batched, after the job succeeded; its model is usable at once); "
            "off, or on a base not served, the training worker answers it before the job succeeds."
        ),
    )
    eval_interval_seconds: float = Field(
        2.0,
        description="How often this node looks for evaluations waiting for an engine.",
    )
    eval_claim_timeout_seconds: float = Field(
        600.0,
        description=(
            "An evaluation claimed by a node that has not finished it (nor renewed its claim) for "
            "this long is taken over."
        ),
    )
    eval_max_attempts: int = Field(
        3,
        description="Failed tries (an engine error) before an evaluation is given up as failed.",
    )
    # Webhooks.
    webhook_dispatch_interval_seconds: float = Field(
        1.0,
        description="How often (seconds) each API node looks for webhook deliveries that are due.",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        description=(
            "One delivery attempt, from connecting to the receiver's answer, gets this long."
        ),
    )
    webhook_retry_delays: Annotated[list[Annotated[float, Field(gt=0)]],
                                    Field(min_length=1)] = Field(
        [5, 30, 120, 600, 3600, 10800],
        description=(
            "Seconds before each retry of a failed delivery (JSON list); the last repeats until "
            "the delivery is `TUNESERVE_WEBHOOK_MAX_AGE_SECONDS` old."
        ),
    )
    webhook_max_age_seconds: float = Field(
        72 * 3600.0,
        description="A delivery this old (72 h, as OpenAI retries for up to 72 hours) is given up.",
    )
    webhook_allow_private_urls: bool = Field(
        False,
        description=(
            "Off (the default), webhooks go to public addresses only: a URL whose host is, or "
            "resolves to, a loopback, private, link-local, metadata, CGNAT, multicast or reserved "
            "address (also inside NAT64, 6to4, Teredo or IPv4-mapped IPv6) is refused when saved "
            "and at each attempt, which connects to the address it checked. On lets tenants reach "
            "this node's own network (local development, receivers beside a single-tenant "
            "tuneserve)."
        ),
    )
    webhook_max_endpoints_per_project: int = Field(
        20,
        description="Webhook endpoints one project may have.",
    )
    # API keys.
    api_keys_max_per_project: int = Field(
        20, ge=1, le=1000,
        description=(
            "Live (unrevoked) API keys one project may have when it makes them itself "
            "(`POST /v1/organization/projects/{project_id}/api_keys`); the operator's "
            "`tuneserve keys create` and the keys jobs make for their graders are not held to it."
        ),
    )

    @model_validator(mode="after")
    def _own_api_url(self) -> "Settings":
        """Local workers reach this node where it listens (loopback for a wildcard), if it
        serves models to judge with."""
        if not self.api_url and self.serving_enabled:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            host = f"[{host}]" if ":" in host else host
            self.api_url = f"http://{host}:{self.port}"
        return self

    @field_validator("bootstrap_api_key")
    @classmethod
    def _long_enough(cls, key: str | None) -> str | None:
        if key is not None and len(key) < MIN_BOOTSTRAP_KEY_LENGTH:
            raise ValueError(f"must be at least "
                             f"{MIN_BOOTSTRAP_KEY_LENGTH} characters long")
        return key

    def engine_evaluated_bases(self) -> list[str]:
        """The bases whose jobs the serving engine evaluates."""
        if not (self.eval_on_engine and self.eval_max_examples > 0):
            return []
        return self.served_bases() or []
