"""The webhook outbox: deliveries are queued in the same transaction as the change they
announce, so an event is never lost (the change committed) nor invented (it rolled back).
The API's dispatcher sends them."""

import json
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.ids import new_id
from storage.models import WebhookDelivery, WebhookEndpoint

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


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
