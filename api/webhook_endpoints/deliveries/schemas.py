"""An endpoint's deliveries (a tuneserve extension; OpenAI shows them on its dashboard only):
one per event, with its attempts. Never the payload's signature nor the endpoint's secret."""

from typing import Literal

from pydantic import BaseModel

from api.lists import CursorPage

DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookDeliveryAttemptObject(BaseModel):
    attempt: int  # 1 for the first
    attempted_at: int
    delivered: bool
    # The receiver's 2xx status when it took the event, else None: what it answered
    # otherwise, or why it could not be reached, is not shown (it would let a tenant probe
    # what the server can reach, as `test` does not say either).
    status_code: int | None
    error: str | None


class WebhookDeliveryObject(BaseModel):
    # The `webhook-id` header, the same on every attempt.
    id: str
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    webhook_endpoint_id: str
    event_id: str
    event_type: str
    created_at: int
    status: DeliveryStatus
    # The latest attempts, oldest first (at most `ATTEMPTS_SHOWN` of them), and how many
    # there were in all.
    attempts: list[WebhookDeliveryAttemptObject]
    attempt_count: int
    # Pending: no attempt starts before then. None once delivered or given up.
    next_attempt_at: int | None
    finished_at: int | None


class WebhookDeliveryList(CursorPage[WebhookDeliveryObject]):
    pass
