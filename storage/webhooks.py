"""The webhook outbox: deliveries are queued in the same transaction as the change they
announce, so an event is never lost (the change committed) nor invented (it rolled back).
The API's dispatcher (`api/background/webhook_dispatcher.py`) sends them.

A delivery's state, in the shape every machine here has (`storage/states.py`):

    pending --claimed (attempts + 1) / retry later--> pending
       |---an attempt the receiver took---> delivered
       \\---failed past the delivery's max age---> failed

`advance` is the one writer: a conditional UPDATE of a pending delivery, fenced by its
`attempts` (a claim takes attempt n + 1; only the holder of attempt n + 1 records it), so two
nodes never send one attempt and a claim that outlived its lease records nothing."""

import json
import time
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage import states
from storage.db import rows_affected
from storage.ids import new_id
from storage.models import WebhookDelivery, WebhookEndpoint


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


D = DeliveryStatus
TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    # -> pending: claimed for an attempt, or that attempt failed and waits for its retry.
    D.PENDING: frozenset({D.PENDING, D.DELIVERED, D.FAILED}),
    D.DELIVERED: frozenset(),
    D.FAILED: frozenset(),
}
del D
PENDING, DELIVERED, FAILED = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED,
                              DeliveryStatus.FAILED)


def advance(session: Session, delivery_id: str, at_attempt: int,
            status: DeliveryStatus = DeliveryStatus.PENDING, **values: Any) -> bool:
    """Sets `status` and `values` on the delivery if it is still pending and its `attempts`
    are still `at_attempt`; False if not (it was delivered, given up, deleted with its
    endpoint, or another holder has a later attempt)."""
    states.check_transition(TRANSITIONS, [DeliveryStatus.PENDING], status)
    return rows_affected(
        session,
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
               WebhookDelivery.attempts == at_attempt)
        .values(status=status, **values),
    ) == 1


def event_payload(event_type: str, object_id: str, created_at: int) -> str:
    """OpenAI's event body: `{id, object, created_at, type, data: {id}}`; receivers fetch
    the object itself."""
    return json.dumps({"id": new_id("evt_"), "object": "event", "created_at": created_at,
                       "type": event_type, "data": {"id": object_id}}, separators=(",", ":"))


def enqueue(session: Session, project_id: str, event_type: str, object_id: str,
            created_at: int) -> None:
    """One delivery of the event to each of the project's endpoints that subscribe to it."""
    endpoints = session.scalars(select(WebhookEndpoint)
                                .where(WebhookEndpoint.project_id == project_id))
    # A project has a handful of endpoints: matching in Python keeps JSON out of the SQL.
    matching = [e for e in endpoints if event_type in e.event_types]
    if not matching:
        return
    payload = event_payload(event_type, object_id, created_at)
    now = time.time()
    for endpoint in matching:
        session.add(WebhookDelivery(
            id=new_id("wh_"), endpoint_id=endpoint.id, event_type=event_type, payload=payload,
            status=PENDING, attempts=0, next_attempt_at=now, created_at=int(now),
        ))


def enqueue_job_outcome(session: Session, project_id: str, job_id: str, status: str,
                        finished_at: int | None) -> None:
    """`fine_tuning.job.succeeded|failed|cancelled` for a job that just ended so."""
    enqueue(session, project_id, f"fine_tuning.job.{status}", job_id,
            finished_at or int(time.time()))
