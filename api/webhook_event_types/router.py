"""`/v1/webhook_event_types`: the event types a webhook endpoint may subscribe to."""

from fastapi import APIRouter

from api.deps import CurrentProject
from api.errors import error_responses
from api.webhook_endpoints.schemas import EVENT_TYPES
from api.webhook_event_types.schemas import WebhookEventTypeList

router = APIRouter(prefix="/webhook_event_types", tags=["webhooks"],
                   responses=error_responses(404))


@router.get("", response_model=WebhookEventTypeList)
def list_webhook_event_types(project: CurrentProject) -> WebhookEventTypeList:
    return WebhookEventTypeList(data=list(EVENT_TYPES))
