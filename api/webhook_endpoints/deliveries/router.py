"""`/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries`: the endpoint's events, newest
first, each with its attempts."""

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DB, CurrentProject
from api.errors import error_responses
from api.pagination import page
from api.webhook_endpoints import service as endpoints
from api.webhook_endpoints.deliveries import service
from api.webhook_endpoints.deliveries.schemas import WebhookDeliveryList
from storage.models import WebhookDelivery

router = APIRouter(prefix="/webhook_endpoints/{webhook_endpoint_id}/deliveries",
                   tags=["webhooks"], responses=error_responses(404))


@router.get("", response_model=WebhookDeliveryList)
def list_webhook_deliveries(
    webhook_endpoint_id: str, project: CurrentProject, session: DB,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> WebhookDeliveryList:
    endpoint = endpoints.get_endpoint(session, project.id, webhook_endpoint_id)
    rows, has_more = page(session, service.endpoint_deliveries(endpoint.id), WebhookDelivery,
                          after=after, limit=limit)
    return WebhookDeliveryList(
        data=service.delivery_objects(session, rows),
        first_id=rows[0].id if rows else None, last_id=rows[-1].id if rows else None,
        has_more=has_more,
    )
