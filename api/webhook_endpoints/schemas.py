"""The webhook endpoint objects, as the openai client reads them."""

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from api.lists import CursorPage
from storage.models import WebhookEndpoint

# The events tuneserve emits (OpenAI has more kinds: batches, responses, evals...).
EventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed",
                    "fine_tuning.job.cancelled"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

Name = Annotated[str, Field(min_length=1, max_length=256)]
# Checked for its scheme and host by the service, which can say what is wrong.
Url = Annotated[str, Field(min_length=1, max_length=2048)]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]


class CreateWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    url: Url
    event_types: EventTypes


class UpdateWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: Url | None = None
    event_types: EventTypes | None = None


class RotateSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_old_secret_active_for_24_hours: bool = False


class TestWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: EventType


def secret_hint(secret: str) -> str:
    return f"whsec_...{secret[-4:]}"


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str

    @classmethod
    def of(cls, row: WebhookEndpoint) -> "WebhookEndpointObject":
        return cls(id=row.id, created_at=row.created_at, updated_at=row.updated_at,
                   name=row.name, url=row.url, event_types=row.event_types,
                   signing_secret_hint=secret_hint(row.secret))


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """Only when a secret is made (create, rotate_secret); never again."""

    signing_secret: str

    @classmethod
    def of(cls, row: WebhookEndpoint) -> "WebhookEndpointWithSecret":
        return cls(**WebhookEndpointObject.of(row).model_dump(), signing_secret=row.secret)


class WebhookEndpointList(CursorPage[WebhookEndpointObject]):
    pass


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookEndpointTestResult(BaseModel):
    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    webhook_endpoint_id: str
    event_type: str
    # The receiver's 2xx status. Unlike OpenAI, any other outcome is a 400
    # `webhook_delivery_failed` that does not say what the receiver answered (it would let
    # a tenant probe what the server can reach).
    status_code: int
    success: Literal[True] = True
