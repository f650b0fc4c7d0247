"""Webhook endpoint rows: scoped lookups, the checks on what a project may save, secrets."""

import asyncio
import contextlib
import logging
import time

import httpx
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.settings import Settings
from api.webhook_endpoints.schemas import (
    CreateWebhookEndpointRequest,
    EventType,
    UpdateWebhookEndpointRequest,
)
from api.webhooks.addresses import lookup, parse_address, refused_addresses, refused_host
from api.webhooks.delivery import default_port, new_secret, send, url_origin
from storage.ids import new_id
from storage.models import Project, WebhookEndpoint
from storage.webhooks import event_payload

log = logging.getLogger("tuneserve.webhooks")

# How long `keep_old_secret_active_for_24_hours` keeps signing with the replaced secret.
OLD_SECRET_SECONDS = 24 * 3600


def project_endpoints(project_id: str) -> Select[WebhookEndpoint]:
    return select(WebhookEndpoint).where(WebhookEndpoint.project_id == project_id)


def get_endpoint(session: Session, project_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = session.scalar(project_endpoints(project_id).where(WebhookEndpoint.id == endpoint_id))
    if row is None:
        raise not_found("webhook endpoint", endpoint_id, "webhook_endpoint_id")
    return row


def delete_endpoint(session: Session, project_id: str, endpoint_id: str) -> None:
    # Its pending deliveries go with it (ON DELETE CASCADE).
    session.delete(get_endpoint(session, project_id, endpoint_id))


def check_url(url: str, allow_private: bool) -> str:
    """`url` if a project may save it: http(s), and, unless private addresses are allowed,
    a host that is not one, nor resolves to one now (checked again at each attempt, as DNS
    may change; a name that does not resolve yet is left to those checks)."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        target = None
    if target is None or target.scheme not in ("http", "https") or not target.raw_host:
        raise APIError(400, f"Invalid URL '{url}' for 'url': it must be an absolute http:// "
                       "or https:// URL.", param="url", code="invalid_url")
    if allow_private:
        return url
    host = target.raw_host.decode("ascii")
    refused = refused_host(host)
    if refused is None and parse_address(host) is None:
        with contextlib.suppress(OSError):
            refused = refused_addresses(host, lookup(host, default_port(target)))
    if refused is not None:
        raise APIError(400, f"Invalid URL '{url}' for 'url': {refused}, and this server "
                       "sends webhooks to public addresses only.", param="url",
                       code="invalid_url")
    return url


def _unique(event_types: list[EventType]) -> list[str]:
    return list(dict.fromkeys(event_types))


def create_endpoint(session: Session, project_id: str, body: CreateWebhookEndpointRequest,
                    *, allow_private: bool, max_endpoints: int) -> WebhookEndpoint:
    check_url(body.url, allow_private)
    # Locks the project's row (PostgreSQL), so two creations at once cannot pass the limit.
    session.execute(select(Project.seq).where(Project.id == project_id).with_for_update())
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint)
                           .where(WebhookEndpoint.project_id == project_id)) or 0
    if count >= max_endpoints:
        raise APIError(400, f"This project already has {max_endpoints} webhook endpoints, "
                       "the most it may have; delete one first.",
                       code="webhook_endpoint_limit_reached")
    now = int(time.time())
    row = WebhookEndpoint(
        id=new_id("whe_"), project_id=project_id, name=body.name, url=body.url,
        event_types=_unique(body.event_types), secret=new_secret(),
        created_at=now, updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def update_endpoint(row: WebhookEndpoint, body: UpdateWebhookEndpointRequest, *,
                    allow_private: bool) -> None:
    changes: dict[str, object] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.url is not None:
        changes["url"] = check_url(body.url, allow_private)
    if body.event_types is not None:
        changes["event_types"] = _unique(body.event_types)
    changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
    # As OpenAI's: an update that changes nothing leaves `updated_at` alone.
    if changes:
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at = int(time.time())


def rotate_secret(row: WebhookEndpoint, keep_old: bool) -> None:
    now = int(time.time())
    row.previous_secret = row.secret if keep_old else None
    row.previous_secret_expires_at = now + OLD_SECRET_SECONDS if keep_old else None
    row.secret = new_secret()
    row.updated_at = now


def signing_secrets(row: WebhookEndpoint, now: float) -> list[str]:
    """The current secret, and the replaced one while it is kept."""
    if row.previous_secret is not None and (row.previous_secret_expires_at or 0) > now:
        return [row.secret, row.previous_secret]
    return [row.secret]


async def send_test(endpoint: WebhookEndpoint, event_type: str, settings: Settings) -> int:
    """POSTs a sample event (about a job id that exists nowhere) once; the receiver's 2xx
    status. Anything else is a 400 that says only that it was not delivered, answered when
    the attempt's time is up whatever happened: a receiver's status, an error's text, or how
    soon it failed would let a tenant map what the server can reach (a port scan)."""
    payload = event_payload(event_type, new_id("ftjob-"), int(time.time()))
    timeout = settings.webhook_timeout_seconds
    started = time.monotonic()
    outcome = await send(endpoint.url, signing_secrets(endpoint, time.time()), new_id("wh_"),
                         payload, timeout=timeout,
                         allow_private=settings.webhook_allow_private_urls)
    if outcome.ok and outcome.status_code is not None:
        return outcome.status_code
    log.info("test event to webhook endpoint %s (%s) not delivered: %s", endpoint.id,
             url_origin(endpoint.url), outcome.error or f"HTTP {outcome.status_code}")
    await asyncio.sleep(max(0.0, started + timeout - time.monotonic()))
    raise APIError(400, f"The test event was not delivered: the endpoint did not acknowledge "
                   f"it with a 2xx status within {timeout:g} s.",
                   code="webhook_delivery_failed")
