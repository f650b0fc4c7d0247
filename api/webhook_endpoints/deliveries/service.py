"""An endpoint's deliveries and their attempts, as the dispatcher recorded them
(`api/background/webhook_dispatcher.py`); kept a week after they end."""

import json
import math
from collections import defaultdict

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.webhook_endpoints.deliveries.schemas import (
    WebhookDeliveryAttemptObject,
    WebhookDeliveryObject,
)
from storage.models import WebhookDelivery, WebhookDeliveryAttempt
from storage.webhooks import DeliveryStatus

# Attempts shown per delivery: the latest. A delivery retried for days has dozens.
ATTEMPTS_SHOWN = 20
NOT_DELIVERED = "Not delivered: the endpoint did not acknowledge the event with a 2xx status."
# What a refusal says (the URL's host is, or now resolves to, a private address) is what
# saving the URL says too, so it is shown.
REFUSED = "refused: "


def endpoint_deliveries(endpoint_id: str) -> Select[WebhookDelivery]:
    return select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)


def attempt_object(row: WebhookDeliveryAttempt) -> WebhookDeliveryAttemptObject:
    delivered = row.status_code is not None and 200 <= row.status_code < 300
    error = None
    if not delivered:
        error = row.error if row.error and row.error.startswith(REFUSED) else NOT_DELIVERED
    return WebhookDeliveryAttemptObject(
        attempt=row.attempt, attempted_at=row.attempted_at, delivered=delivered,
        status_code=row.status_code if delivered else None, error=error)


def delivery_objects(session: Session,
                     rows: list[WebhookDelivery]) -> list[WebhookDeliveryObject]:
    """The deliveries with their latest attempts, read in one query."""
    attempts: dict[str, list[WebhookDeliveryAttempt]] = defaultdict(list)
    if rows:
        query = (select(WebhookDeliveryAttempt)
                 .join(WebhookDelivery,
                       WebhookDelivery.id == WebhookDeliveryAttempt.delivery_id)
                 .where(WebhookDelivery.id.in_([r.id for r in rows]),
                        WebhookDeliveryAttempt.attempt > WebhookDelivery.attempts - ATTEMPTS_SHOWN)
                 .order_by(WebhookDeliveryAttempt.attempt))
        for attempt in session.scalars(query):
            attempts[attempt.delivery_id].append(attempt)
    return [WebhookDeliveryObject(
        id=row.id, webhook_endpoint_id=row.endpoint_id, event_id=json.loads(row.payload)["id"],
        event_type=row.event_type, created_at=row.created_at,
        status=DeliveryStatus(row.status).value,
        attempts=[attempt_object(a) for a in attempts[row.id]],
        # Counts the attempt under way too, which has no record yet.
        attempt_count=row.attempts,
        next_attempt_at=(math.ceil(row.next_attempt_at)
                         if row.status == DeliveryStatus.PENDING else None),
        finished_at=row.finished_at,
    ) for row in rows]
