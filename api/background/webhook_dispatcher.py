"""Sends the webhook outbox. Every API node runs one dispatcher: it claims due deliveries
(`SKIP LOCKED` on PostgreSQL, and a conditional claim everywhere, so no two nodes send one
attempt), POSTs them, records each attempt, and retries failures with backoff until the
delivery is too old. Everything is in the DB, so a restart loses nothing."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select

from api.settings import Settings
from api.webhook_endpoints.service import signing_secrets
from api.webhooks.delivery import Outcome, send, url_origin
from storage.db import Database
from storage.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from storage.webhooks import DeliveryStatus, advance

log = logging.getLogger("tuneserve.webhooks")

BATCH = 50
# Delivered and given-up deliveries (with their attempts) are kept this long, for whoever
# looks into one, then pruned (checked hourly).
KEEP_FINISHED_SECONDS = 7 * 86400
PRUNE_EVERY_SECONDS = 3600


@dataclass(frozen=True)
class Claim:
    id: str
    endpoint_id: str
    attempt: int
    created_at: int
    payload: str
    url: str
    secrets: list[str]


def claim_due(db: Database, now: float, lease: float, limit: int = BATCH) -> list[Claim]:
    """Takes up to `limit` due deliveries for `lease` seconds: until then no other node
    sees them as due; one this node does not finish (it died) is due again after it."""
    with db.session() as s:
        rows = list(s.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING,
                   WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True)
        ))
        endpoints = {e.id: e for e in s.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.id.in_({r.endpoint_id for r in rows})))} if rows else {}
        claims = []
        for row in rows:
            endpoint, attempt = endpoints.get(row.endpoint_id), row.attempts + 1
            if endpoint is not None and advance(
                    s, row.id, attempt - 1, attempts=attempt, next_attempt_at=now + lease):
                claims.append(Claim(id=row.id, endpoint_id=endpoint.id, attempt=attempt,
                                    created_at=row.created_at, payload=row.payload,
                                    url=endpoint.url, secrets=signing_secrets(endpoint, now)))
        return claims


def record(db: Database, claim: Claim, outcome: Outcome, delays: list[float],
           max_age: float) -> None:
    """The attempt, and what follows it: done, a retry after the next delay, or given up."""
    now = time.time()
    status = DeliveryStatus.DELIVERED
    values: dict[str, float] = {"finished_at": int(now)}
    if not outcome.ok:
        delay = delays[min(claim.attempt, len(delays)) - 1]
        if now + delay - claim.created_at > max_age:
            status, values = DeliveryStatus.FAILED, {"finished_at": int(now)}
        else:
            status, values = DeliveryStatus.PENDING, {"next_attempt_at": now + delay}
    with db.session() as s:
        if not advance(s, claim.id, claim.attempt, status, **values):
            return  # its endpoint was deleted, or the claim outlived its lease
        s.add(WebhookDeliveryAttempt(delivery_id=claim.id, attempt=claim.attempt,
                                     attempted_at=int(now), status_code=outcome.status_code,
                                     error=outcome.error))
    if status is DeliveryStatus.FAILED:
        log.warning("webhook %s to endpoint %s (%s) given up after %d attempts (last: %s)",
                    claim.id, claim.endpoint_id, url_origin(claim.url), claim.attempt,
                    outcome.error or outcome.status_code)


def prune(db: Database, before: float) -> None:
    with db.session() as s:
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.status != DeliveryStatus.PENDING,
                                                WebhookDelivery.created_at < before))


class WebhookDispatcher:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        # Covers an attempt (bounded by the timeout) and the writes around it.
        self.lease = 2 * settings.webhook_timeout_seconds + 30
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Lets the attempts in hand finish and be recorded, so a restart resends none of
        them; past the lease, they are cut short (and sent again after the restart)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, self.lease)

    async def _run(self) -> None:
        pruned = 0.0
        while not self._stopping.is_set():
            full = False
            try:
                if time.monotonic() - pruned > PRUNE_EVERY_SECONDS:
                    pruned = time.monotonic()
                    await run_in_threadpool(prune, self.db,
                                            time.time() - KEEP_FINISHED_SECONDS)
                full = await self.run_once()
            except Exception:
                log.exception("sending webhooks failed; trying again later")
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(),
                                           self.settings.webhook_dispatch_interval_seconds)

    async def run_once(self) -> bool:
        """Sends what is due now; True if there may be more."""
        claims = await run_in_threadpool(claim_due, self.db, time.time(), self.lease)
        results = await asyncio.gather(*(self._deliver(c) for c in claims),
                                       return_exceptions=True)
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):
                log.error("recording webhook %s failed; it is sent again after its lease",
                          claim.id, exc_info=result)
        return len(claims) == BATCH

    async def _deliver(self, claim: Claim) -> None:
        outcome = await send(claim.url, claim.secrets, claim.id, claim.payload,
                             timeout=self.settings.webhook_timeout_seconds,
                             allow_private=self.settings.webhook_allow_private_urls)
        if not outcome.ok:
            log.info("webhook %s to endpoint %s (%s), attempt %d: %s", claim.id,
                     claim.endpoint_id, url_origin(claim.url), claim.attempt,
                     outcome.error or f"HTTP {outcome.status_code}")
        await run_in_threadpool(record, self.db, claim, outcome,
                                self.settings.webhook_retry_delays,
                                self.settings.webhook_max_age_seconds)
