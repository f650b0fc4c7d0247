"""All of the API's settings, from `TUNESERVE_*` environment variables."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from api.tenancy import MIN_BOOTSTRAP_KEY_LENGTH
from serving.settings import ServingSettings
from training.settings import TrainingSettings

MiB = 1 << 20


class Settings(TrainingSettings, ServingSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    # Creates the default project with this key when the key store is empty; at least 32
    # characters (a short, chosen key is guessable).
    bootstrap_api_key: str | None = None
    # `text` lines, or `json`: one object a line (time, level, logger, request_id, message).
    log_format: Literal["text", "json"] = "text"
    default_project: str = "default"
    max_file_bytes: int = 512 * MiB
    max_upload_bytes: int = 8 * 1024 * MiB
    # The openai client's `upload_file_chunked` sends 64 MiB parts.
    max_part_bytes: int = 64 * MiB
    upload_ttl_seconds: int = 3600
    # Uploads one project may have in progress at once (400 past it; 0: no limit): each may
    # hold up to twice its bytes in parts until it completes, is cancelled or expires.
    max_pending_uploads_per_project: int = 100
    # Request bodies other than file uploads, refused (413) as they arrive, before they are
    # parsed or buffered: chat, completions and responses requests, and every other route's
    # JSON.
    max_inference_body_bytes: int = 16 * MiB
    max_control_body_bytes: int = 1 * MiB
    # Per project, across all API nodes (counted in the DB): model requests and tokens per
    # minute (429 past them; 0: no limit), and bytes of files stored (403 past it; 0: none).
    rate_limit_requests_per_minute: int = 0
    rate_limit_tokens_per_minute: int = 0
    max_project_stored_bytes: int = 0
    # Job event streams (`?stream=true`) one project may hold open on one API node (429
    # past it; 0: no limit): each polls the DB twice a second while it is open.
    max_event_streams_per_project: int = 20
    # The stream of a paused job (which may wait for days) ends once it has sent nothing for
    # this long; clients reconnect after its last event, as after any lost stream.
    event_stream_paused_idle_seconds: float = 60.0
    # How often expired files and uploads are swept away.
    reaper_interval_seconds: float = 60.0
    # Logs under `{data_dir}/logs` (workers', the engine's rotated ones) nothing wrote to for
    # this long are deleted.
    log_retention_days: float = 14.0
    # Blobs no live row accounts for (left by a crash between a blob and its row) are
    # deleted once older than the grace period; the store is walked this often.
    orphan_grace_seconds: float = 86400.0
    orphan_sweep_interval_seconds: float = 3600.0
    # The built-in evaluation of a job on a base that this deployment serves is answered by
    # the serving engine (batched, after the job succeeded; its model is usable at once);
    # off, or on a base not served, the training worker answers it before the job succeeds.
    eval_on_engine: bool = True
    # How often this node looks for evaluations waiting for an engine; an evaluation claimed
    # by a node that has not finished it (nor renewed its claim) for this long is taken over.
    eval_interval_seconds: float = 2.0
    eval_claim_timeout_seconds: float = 600.0
    # Failed tries (an engine error) before an evaluation is given up as failed.
    eval_max_attempts: int = 3
    # Webhooks. Each node looks for due deliveries this often (seconds).
    webhook_dispatch_interval_seconds: float = 1.0
    # One delivery attempt, connecting to the receiver's answer, gets this long.
    webhook_timeout_seconds: float = 10.0
    # Seconds before each retry of a failed delivery; the last repeats until the delivery
    # is this old, when it is given up (OpenAI retries for up to 72 hours).
    webhook_retry_delays: Annotated[list[Annotated[float, Field(gt=0)]],
                                    Field(min_length=1)] = [5, 30, 120, 600, 3600, 10800]
    webhook_max_age_seconds: float = 72 * 3600.0
    # Off (the default), webhooks go to public addresses only: a URL whose host is, or
    # resolves to, a loopback, private, link-local, metadata, CGNAT, multicast or reserved
    # address (also inside NAT64, 6to4, Teredo or IPv4-mapped IPv6) is refused when saved and
    # at each attempt, which connects to the address it checked. On lets tenants reach this
    # node's own network (local development, receivers beside a single-tenant tuneserve).
    webhook_allow_private_urls: bool = False
    # Endpoints one project may have.
    webhook_max_endpoints_per_project: int = 20

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
