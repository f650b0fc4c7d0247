"""Webhooks as the openai client manages and checks them: endpoints scoped to a project,
job outcomes delivered signed (Standard Webhooks), retried with the same id until a 2xx,
test events, secret rotation, and a pending delivery carried across a restart.

A receiver on 127.0.0.1 records every request; `client.webhooks.unwrap` verifies them."""

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent
from sqlalchemy import select

from api.background.webhook_dispatcher import claim_due, record
from api.errors import APIError
from api.webhook_endpoints.service import check_url
from api.webhooks.delivery import Outcome, new_secret, send
from storage import webhooks
from storage.db import Database
from storage.ids import random_token
from storage.models import (
    FineTuningJob,
    Project,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from storage.states import IllegalTransition
from tests.support import postgres
from tests.support.ports import free_port
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example, upload
from training import jobs

pytestmark = pytest.mark.server

SUCCEEDED, FAILED, CANCELLED = ("fine_tuning.job.succeeded", "fine_tuning.job.failed",
                                "fine_tuning.job.cancelled")
RETRY_DELAY = 0.5
FAST_WEBHOOKS = {
    # The receiver is on loopback, which only a server that opts in sends to.
    "TUNESERVE_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
    "TUNESERVE_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.1",
    "TUNESERVE_WEBHOOK_RETRY_DELAYS": f"[{RETRY_DELAY}]",
    "TUNESERVE_WEBHOOK_TIMEOUT_SECONDS": "3",
}


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """Answers each path with the statuses queued for it, then its default (200)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.queued: dict[str, list[int]] = {}
        self.defaults: dict[str, int] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.changed:
                    queued = receiver.queued.get(self.path)
                    status = queued.pop(0) if queued else receiver.defaults.get(self.path, 200)
                    receiver.hits.append(Hit(self.path, {k.lower(): v for k, v in
                                                         self.headers.items()}, body, status))
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def at(self, path: str) -> list[Hit]:
        with self.changed:
            return [h for h in self.hits if h.path == path]

    def wait(self, path: str, count: int, timeout: float = 30) -> list[Hit]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.at(path)) >= count, timeout):
                raise AssertionError(f"{path}: {len(self.at(path))} of {count} deliveries "
                                     f"after {timeout} s")
            return self.at(path)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hooks_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 models_dir: Path) -> Iterator[TuneserveServer]:
    """Its own server (no engine): retries after half a second, so a test sees several."""
    env = {**FAST_WEBHOOKS, "TUNESERVE_MODELS_DIR": str(models_dir),
           "TUNESERVE_TRAIN_UNSERVED_BASES": "true"}
    db_name = None
    if request.param == "postgresql":
        db_name, env["TUNESERVE_DATABASE_URL"] = postgres.create_database()
    srv = TuneserveServer(tmp_path_factory.mktemp("webhooks"), env).start()
    yield srv
    srv.stop()
    if db_name:
        postgres.drop_database(db_name)


@pytest.fixture
def other(hooks_server: TuneserveServer) -> openai.OpenAI:
    return hooks_server.client(hooks_server.other_key())


@pytest.fixture
def client(hooks_server: TuneserveServer, other: openai.OpenAI) -> Iterator[openai.OpenAI]:
    """The default project's client; each test starts with no endpoint in either project."""
    client = hooks_server.client()
    yield client
    for c in (client, other):
        for endpoint_id in [e.id for e in c.webhooks.list(limit=100)]:
            c.webhooks.delete(endpoint_id)


def new_path() -> str:
    return f"/hooks/{random_token(8)}"


def cancelled_job(client: openai.OpenAI) -> str:
    """A job cancelled at once: it ends without training."""
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(10)]))
    client.fine_tuning.jobs.cancel(job.id)
    return job.id


def server_db(server: TuneserveServer) -> Database:
    return Database(server.env.get("TUNESERVE_DATABASE_URL")
                    or f"sqlite:///{server.data_dir / 'tuneserve.db'}")


def test_event_types_are_the_ones_emitted(client: openai.OpenAI) -> None:
    assert client.webhooks.event_types.list().data == [SUCCEEDED, FAILED, CANCELLED]


def test_endpoints_are_managed_and_scoped_to_their_project(
    client: openai.OpenAI, other: openai.OpenAI, hooks_server: TuneserveServer,
    receiver: Receiver,
) -> None:
    made = client.webhooks.create(name="ci", url=receiver.url("/a"), event_types=[SUCCEEDED])
    assert made.id.startswith("whe_") and made.object == "webhook_endpoint"
    assert made.signing_secret.startswith("whsec_")
    assert len(base64.b64decode(made.signing_secret.removeprefix("whsec_"))) == 32
    assert made.signing_secret_hint == f"whsec_...{made.signing_secret[-4:]}"
    assert made.updated_at == made.created_at
    second = client.webhooks.create(name="ops", url=receiver.url("/b"),
                                    event_types=[FAILED, CANCELLED, FAILED])
    assert second.event_types == [FAILED, CANCELLED]

    # The secret is shown once: no read returns it again.
    with hooks_server.http() as http:
        shown = http.get(f"/webhook_endpoints/{made.id}").json()
    assert "signing_secret" not in shown and shown["signing_secret_hint"]
    got = client.webhooks.retrieve(made.id)
    assert (got.name, got.url, got.event_types) == ("ci", receiver.url("/a"), [SUCCEEDED])

    first_page = client.webhooks.list(limit=1)
    assert [e.id for e in first_page.data] == [second.id] and first_page.has_more
    rest = client.webhooks.list(limit=1, after=second.id)
    assert [e.id for e in rest.data] == [made.id] and not rest.has_more
    assert [e.id for e in client.webhooks.list()] == [second.id, made.id]

    updated = client.webhooks.update(made.id, name="renamed", url=receiver.url("/c"),
                                     event_types=[CANCELLED])
    assert (updated.name, updated.url, updated.event_types) == (
        "renamed", receiver.url("/c"), [CANCELLED])
    time.sleep(1.1)  # timestamps are in seconds
    unchanged = client.webhooks.update(made.id, name="renamed")
    assert unchanged.updated_at == updated.updated_at

    for call in (lambda: other.webhooks.retrieve(made.id),
                 lambda: other.webhooks.update(made.id, name="mine"),
                 lambda: other.webhooks.rotate_secret(made.id),
                 lambda: other.webhooks.test(made.id, event_type=SUCCEEDED),
                 lambda: other.webhooks.delete(made.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.param == "webhook_endpoint_id"
    assert other.webhooks.list().data == []

    deleted = client.webhooks.delete(made.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (
        made.id, True, "webhook_endpoint.deleted")
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(made.id)


def test_invalid_requests_name_the_field(
    client: openai.OpenAI, hooks_server: TuneserveServer, receiver: Receiver,
) -> None:
    url = receiver.url("/x")
    cases = [
        ({"name": "x", "url": "ftp://example.com/hook", "event_types": [SUCCEEDED]}, "url"),
        ({"name": "x", "url": "example.com/hook", "event_types": [SUCCEEDED]}, "url"),
        ({"name": "x", "url": url, "event_types": ["batch.completed"]}, "event_types"),
        ({"name": "x", "url": url, "event_types": []}, "event_types"),
        ({"name": "", "url": url, "event_types": [SUCCEEDED]}, "name"),
        ({"name": "x", "event_types": [SUCCEEDED]}, "url"),
        ({"name": "x", "url": url, "event_types": [SUCCEEDED], "enabled": True}, "enabled"),
    ]
    with hooks_server.http() as http:
        for body, param in cases:
            answer = http.post("/webhook_endpoints", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"]["param"] == param, answer.json()
    made = client.webhooks.create(name="x", url=url, event_types=[SUCCEEDED])
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.update(made.id, url="javascript:alert(1)")
    assert err.value.param == "url" and "http" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.test(made.id, event_type="batch.completed")  # not one we emit
    assert err.value.param == "event_type"

    for i in range(19):
        client.webhooks.create(name=f"n{i}", url=url, event_types=[SUCCEEDED])
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.create(name="21st", url=url, event_types=[SUCCEEDED])
    assert err.value.code == "webhook_endpoint_limit_reached"


def test_private_urls_can_be_refused(receiver: Receiver) -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook",
                "https://10.1.2.3/hook", "http://169.254.169.254/latest"):
        with pytest.raises(APIError) as err:
            check_url(url, allow_private=False)
        assert err.value.param == "url"
        assert check_url(url, allow_private=True) == url
    assert check_url("https://hooks.example.com/x", allow_private=False)

    # Checked again when sent: a name may resolve to a private address later.
    async def attempt() -> str | None:
        url = receiver.url("/private").replace("127.0.0.1", "localhost")
        return (await send(url, ["whsec_" + "A" * 44], "wh_1", "{}", timeout=3,
                           allow_private=False)).error

    assert "private address" in (asyncio.run(attempt()) or "")
    assert receiver.at("/private") == []


def test_a_cancelled_job_is_delivered_signed_to_the_endpoints_that_want_it(
    client: openai.OpenAI, other: openai.OpenAI, receiver: Receiver,
) -> None:
    path, quiet, theirs = new_path(), new_path(), new_path()
    hook = client.webhooks.create(name="jobs", url=receiver.url(path), event_types=[CANCELLED])
    client.webhooks.create(name="quiet", url=receiver.url(quiet), event_types=[SUCCEEDED])
    other.webhooks.create(name="theirs", url=receiver.url(theirs), event_types=[CANCELLED])

    job_id = cancelled_job(client)
    [hit] = receiver.wait(path, 1)
    event = client.webhooks.unwrap(hit.body, hit.headers, secret=hook.signing_secret)
    assert isinstance(event, FineTuningJobCancelledWebhookEvent)
    assert (event.type, event.object, event.data.id) == (CANCELLED, "event", job_id)
    assert event.id.startswith("evt_") and hit.headers["webhook-id"].startswith("wh_")
    assert event.created_at == client.fine_tuning.jobs.retrieve(job_id).finished_at
    assert hit.headers["content-type"] == "application/json"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(hit.body, hit.headers, secret=client.webhooks.create(
            name="y", url=receiver.url("/y"), event_types=[FAILED]).signing_secret)

    time.sleep(1)
    assert len(receiver.at(path)) == 1
    assert receiver.at(quiet) == [] and receiver.at(theirs) == []


def test_a_failing_receiver_gets_the_same_delivery_until_it_acknowledges(
    client: openai.OpenAI, hooks_server: TuneserveServer, receiver: Receiver,
) -> None:
    path = new_path()
    receiver.queued[path] = [500, 500]
    hook = client.webhooks.create(name="flaky", url=receiver.url(path), event_types=[CANCELLED])
    job_id = cancelled_job(client)

    hits = receiver.wait(path, 3)
    assert [h.status for h in hits] == [500, 500, 200]
    [webhook_id] = {h.headers["webhook-id"] for h in hits}
    for h in hits:
        assert client.webhooks.unwrap(h.body, h.headers, secret=hook.signing_secret
                                      ).data.id == job_id
    time.sleep(3 * RETRY_DELAY)
    assert len(receiver.at(path)) == 3  # acknowledged: never sent again

    db = server_db(hooks_server)
    try:
        with db.session() as s:
            delivery = s.scalar(select(WebhookDelivery).where(WebhookDelivery.id == webhook_id))
            attempts = s.scalars(select(WebhookDeliveryAttempt)
                                 .where(WebhookDeliveryAttempt.delivery_id == webhook_id)
                                 .order_by(WebhookDeliveryAttempt.attempt)).all()
            assert delivery is not None and delivery.status == "delivered"
            assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 500),
                                                                      (3, 200)]
    finally:
        db.dispose()


def test_test_sends_a_sample_event_at_once(client: openai.OpenAI, receiver: Receiver) -> None:
    path = new_path()
    hook = client.webhooks.create(name="t", url=receiver.url(path), event_types=[CANCELLED])
    result = client.webhooks.test(hook.id, event_type=SUCCEEDED)
    assert (result.object, result.webhook_endpoint_id, result.event_type, result.status_code,
            result.success) == ("webhook_endpoint.test", hook.id, SUCCEEDED, 200, True)
    [hit] = receiver.at(path)  # sent before the answer
    event = client.webhooks.unwrap(hit.body, hit.headers, secret=hook.signing_secret)
    assert event.type == SUCCEEDED and event.data.id.startswith("ftjob-")

    # Not acknowledged: a 400 that does not say what the receiver answered (a tenant could
    # map the network with it; tests/adversarial/test_webhook_ssrf.py).
    receiver.queued[path] = [503]
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.test(hook.id, event_type=FAILED)
    assert err.value.code == "webhook_delivery_failed" and "503" not in err.value.message
    time.sleep(3 * RETRY_DELAY)
    assert len(receiver.at(path)) == 2  # a test is sent once, never retried

    closed = client.webhooks.create(name="closed", url=f"http://127.0.0.1:{free_port()}/",
                                    event_types=[SUCCEEDED])
    with pytest.raises(openai.BadRequestError) as err:
        client.webhooks.test(closed.id, event_type=SUCCEEDED)
    assert err.value.code == "webhook_delivery_failed"


def test_rotation_can_keep_the_old_secret_signing(client: openai.OpenAI,
                                                  receiver: Receiver) -> None:
    path = new_path()
    hook = client.webhooks.create(name="r", url=receiver.url(path), event_types=[SUCCEEDED])
    kept = client.webhooks.rotate_secret(hook.id, keep_old_secret_active_for_24_hours=True)
    assert kept.id == hook.id and kept.signing_secret != hook.signing_secret
    assert client.webhooks.retrieve(hook.id).signing_secret_hint == kept.signing_secret_hint
    client.webhooks.test(hook.id, event_type=SUCCEEDED)
    hit = receiver.wait(path, 1)[-1]
    assert [s[:3] for s in hit.headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]
    for secret in (hook.signing_secret, kept.signing_secret):
        client.webhooks.verify_signature(hit.body, hit.headers, secret=secret)

    fresh = client.webhooks.rotate_secret(hook.id)  # the old one stops at once
    client.webhooks.test(hook.id, event_type=SUCCEEDED)
    hit = receiver.wait(path, 2)[-1]
    assert len(hit.headers["webhook-signature"].split(" ")) == 1
    client.webhooks.verify_signature(hit.body, hit.headers, secret=fresh.signing_secret)
    for stale in (hook.signing_secret, kept.signing_secret):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(hit.body, hit.headers, secret=stale)


def test_a_pending_delivery_is_sent_after_a_restart(
    client: openai.OpenAI, hooks_server: TuneserveServer, receiver: Receiver,
) -> None:
    path = new_path()
    receiver.defaults[path] = 500
    hook = client.webhooks.create(name="down", url=receiver.url(path), event_types=[CANCELLED])
    job_id = cancelled_job(client)
    [first] = receiver.wait(path, 1)[:1]

    hooks_server.stop()
    receiver.defaults[path] = 200  # the receiver recovers while tuneserve is down
    hooks_server.start()

    deadline = time.monotonic() + 30
    while not any(h.status == 200 for h in receiver.at(path)):
        assert time.monotonic() < deadline, "not delivered after the restart"
        time.sleep(0.1)
    [acked] = [h for h in receiver.at(path) if h.status == 200]
    assert acked.headers["webhook-id"] == first.headers["webhook-id"]
    event = client.webhooks.unwrap(acked.body, acked.headers, secret=hook.signing_secret)
    assert event.data.id == job_id


def _project_with_endpoint(db: Database, event_types: list[str]) -> None:
    with db.session() as s:
        s.add(Project(id="proj-a", name="a", created_at=0))
        s.flush()
        s.add(WebhookEndpoint(id="whe_a", project_id="proj-a", name="a", url="http://x/",
                              event_types=event_types, secret=new_secret(), created_at=0,
                              updated_at=0))


def _deliveries(db: Database) -> list[WebhookDelivery]:
    with db.session() as s:
        return list(s.scalars(select(WebhookDelivery)))


def test_a_job_outcome_is_queued_in_the_transaction_that_commits_it(database: Database) -> None:
    _project_with_endpoint(database, [SUCCEEDED])
    with database.session() as s:
        s.add(FineTuningJob(id="ftjob-a", project_id="proj-a", model=BASE, training_file="f",
                            seed=1, base_model=BASE, method={"type": "supervised"},
                            status="running", model_name="ft:a", created_at=0))
    with pytest.raises(RuntimeError), database.session() as s:
        assert jobs.transition(s, "ftjob-a", jobs.WORKING, status="succeeded", finished_at=5)
        raise RuntimeError("rolled back: the job did not succeed, and nothing is sent")
    assert _deliveries(database) == []

    with database.session() as s:
        assert jobs.transition(s, "ftjob-a", ("running",), status="pausing")  # no outcome
        assert jobs.transition(s, "ftjob-a", jobs.WORKING, status="succeeded", finished_at=5)
        assert not jobs.transition(s, "ftjob-a", jobs.WORKING, status="failed")
    [delivery] = _deliveries(database)
    body = json.loads(delivery.payload)
    assert body.pop("id").startswith("evt_")
    assert body == {"object": "event", "created_at": 5, "type": SUCCEEDED,
                    "data": {"id": "ftjob-a"}}


def test_claims_are_leased_fenced_and_given_up_when_too_old(database: Database) -> None:
    _project_with_endpoint(database, [CANCELLED])
    with database.session() as s:
        webhooks.enqueue(s, "proj-a", CANCELLED, "ftjob-a", 1)
    now = time.time()
    [claim] = claim_due(database, now, lease=60)
    assert claim_due(database, now, lease=60) == []  # leased to the first claim
    [again] = claim_due(database, now + 61, lease=60)  # the first holder is taken as lost
    assert again.attempt == claim.attempt + 1 == 2

    record(database, claim, Outcome(status_code=200), [1.0], max_age=3600)
    [delivery] = _deliveries(database)
    assert delivery.status == "pending"  # the lost holder's word no longer counts
    record(database, again, Outcome(error="unreachable"), [1.0], max_age=3600)
    [delivery] = _deliveries(database)
    assert delivery.status == "pending" and delivery.next_attempt_at < time.time() + 1.5

    [last] = claim_due(database, time.time() + 2, lease=60)
    record(database, last, Outcome(status_code=500), [1.0], max_age=0)
    [delivery] = _deliveries(database)
    assert delivery.status == "failed" and delivery.finished_at is not None
    with database.session() as s:
        attempts = s.scalars(select(WebhookDeliveryAttempt)
                             .order_by(WebhookDeliveryAttempt.attempt)).all()
        assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
            (2, None, "unreachable"), (3, 500, None)]


@pytest.mark.parametrize("source", list(webhooks.DeliveryStatus))
def test_every_delivery_transition_is_allowed_or_refused_by_the_table(
        source: webhooks.DeliveryStatus, database: Database) -> None:
    _project_with_endpoint(database, [CANCELLED])
    for target in webhooks.DeliveryStatus:
        with database.session() as s:
            webhooks.enqueue(s, "proj-a", CANCELLED, "ftjob-a", 1)
            s.flush()
            delivery = s.scalars(select(WebhookDelivery)
                                 .order_by(WebhookDelivery.seq.desc())).first()
            assert delivery is not None
            delivery_id = delivery.id
            delivery.status = source
        with database.session() as s:
            if target in webhooks.TRANSITIONS[source]:
                assert webhooks.advance(s, delivery_id, 0, target)
            elif target not in webhooks.TRANSITIONS[webhooks.PENDING]:
                with pytest.raises(IllegalTransition):  # from no state: a bug
                    webhooks.advance(s, delivery_id, 0, target)
            else:  # a finished delivery: nothing written
                assert not webhooks.advance(s, delivery_id, 0, target)
            assert not webhooks.advance(s, delivery_id, 5, webhooks.PENDING)  # a stale fence
        with database.session() as s:
            stored = s.scalar(select(WebhookDelivery.status)
                              .where(WebhookDelivery.id == delivery_id))
        assert stored == (target if target in webhooks.TRANSITIONS[source] else source)
