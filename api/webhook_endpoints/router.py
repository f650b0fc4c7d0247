"""`/v1/webhook_endpoints`: create, list, retrieve, update, delete, rotate_secret, test."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from api.deps import DB, AppSettings, CurrentProject, DBFactory
from api.errors import error_responses
from api.pagination import page
from api.webhook_endpoints import service
from api.webhook_endpoints.schemas import (
    CreateWebhookEndpointRequest,
    RotateSecretRequest,
    TestWebhookEndpointRequest,
    UpdateWebhookEndpointRequest,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointObject,
    WebhookEndpointTestResult,
    WebhookEndpointWithSecret,
)
from storage.models import WebhookEndpoint

router = APIRouter(prefix="/webhook_endpoints", tags=["webhooks"],
                   responses=error_responses(404))
ENDPOINT = "/{webhook_endpoint_id}"


@router.post("", response_model=WebhookEndpointWithSecret)
def create_webhook_endpoint(body: CreateWebhookEndpointRequest, project: CurrentProject,
                            session: DB, settings: AppSettings) -> WebhookEndpointWithSecret:
    row = service.create_endpoint(session, project.id, body,
                                  allow_private=settings.webhook_allow_private_urls,
                                  max_endpoints=settings.webhook_max_endpoints_per_project)
    session.commit()
    return WebhookEndpointWithSecret.of(row)


@router.get("", response_model=WebhookEndpointList)
def list_webhook_endpoints(
    project: CurrentProject,
    session: DB,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> WebhookEndpointList:
    rows, has_more = page(session, service.project_endpoints(project.id), WebhookEndpoint,
                          after=after, limit=limit, scope=project.id)
    return WebhookEndpointList(
        data=[WebhookEndpointObject.of(r) for r in rows],
        first_id=rows[0].id if rows else None,
        last_id=rows[-1].id if rows else None,
        has_more=has_more,
    )


@router.get(ENDPOINT, response_model=WebhookEndpointObject)
def retrieve_webhook_endpoint(webhook_endpoint_id: str, project: CurrentProject,
                              session: DB) -> WebhookEndpointObject:
    return WebhookEndpointObject.of(service.get_endpoint(session, project.id,
                                                         webhook_endpoint_id))


@router.post(ENDPOINT, response_model=WebhookEndpointObject)
def update_webhook_endpoint(webhook_endpoint_id: str, body: UpdateWebhookEndpointRequest,
                            project: CurrentProject, session: DB,
                            settings: AppSettings) -> WebhookEndpointObject:
    row = service.get_endpoint(session, project.id, webhook_endpoint_id)
    service.update_endpoint(row, body, allow_private=settings.webhook_allow_private_urls)
    session.commit()
    return WebhookEndpointObject.of(row)


@router.delete(ENDPOINT, response_model=WebhookEndpointDeleted)
def delete_webhook_endpoint(webhook_endpoint_id: str, project: CurrentProject,
                            session: DB) -> WebhookEndpointDeleted:
    service.delete_endpoint(session, project.id, webhook_endpoint_id)
    session.commit()
    return WebhookEndpointDeleted(id=webhook_endpoint_id, deleted=True)


@router.post(f"{ENDPOINT}/rotate_secret", response_model=WebhookEndpointWithSecret)
def rotate_webhook_secret(webhook_endpoint_id: str, project: CurrentProject, session: DB,
                          body: RotateSecretRequest | None = None) -> WebhookEndpointWithSecret:
    row = service.get_endpoint(session, project.id, webhook_endpoint_id)
    service.rotate_secret(row, (body or RotateSecretRequest()).keep_old_secret_active_for_24_hours)
    session.commit()
    return WebhookEndpointWithSecret.of(row)


@router.post(f"{ENDPOINT}/test", response_model=WebhookEndpointTestResult)
async def test_webhook_endpoint(webhook_endpoint_id: str, body: TestWebhookEndpointRequest,
                                project: CurrentProject, db: DBFactory,
                                settings: AppSettings) -> WebhookEndpointTestResult:
    """Sends a sample event of the type now, once (no retries), and says whether the
    receiver acknowledged it (a 400 `webhook_delivery_failed` if not, saying no more)."""

    def load() -> WebhookEndpoint:
        with db.session() as session:
            return service.get_endpoint(session, project.id, webhook_endpoint_id)

    endpoint = await run_in_threadpool(load)
    status = await service.send_test(endpoint, body.event_type, settings)
    return WebhookEndpointTestResult(webhook_endpoint_id=endpoint.id,
                                     event_type=body.event_type, status_code=status)
