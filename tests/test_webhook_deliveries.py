"""`GET /v1/webhook_endpoints/{id}/deliveries`: what the dispatcher did with each event sent to
an endpoint, attempt by attempt, as its project sees it: a receiver's 2xx status, a retry
pending after a failure (what the receiver answered otherwise not shown), newest first and
paged; another project's endpoint a 404, and no secret in it."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from api.webhook_endpoints.deliveries import service as deliveries
from storage import webhooks
from storage.models import WebhookEndpoint
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.receivers import CountingReceiver

CANCELLED = "fine_tuning.job.cancelled"
Json = dict[str, Any]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[InProcessControlPlane]:
    """A control plane that sends webhooks to loopback receivers, retrying quickly."""
    with control_plane_in_process(
            request, request.param, tmp_path_factory.mktemp(f"deliveries-{request.param}"),
            webhook_allow_private_urls=True, webhook_dispatch_interval_seconds=0.1,
            webhook_retry_delays=[0.3]) as plane:
        yield plane


def _job_cancelled(plane: InProcessControlPlane, endpoint: Json, job_id: str) -> None:
    """The event a job of the endpoint's project queues as it ends, in the outbox
    (storage/webhooks.py) as a job does it."""
    with plane.services.db.session() as s:
        project_id = s.scalar(select(WebhookEndpoint.project_id)
                              .where(WebhookEndpoint.id == endpoint["id"]))
        assert project_id is not None
        webhooks.enqueue_job_outcome(s, project_id, job_id, "cancelled", None)


def _wait_for(plane: InProcessControlPlane, endpoint_id: str,
              done: Callable[[list[Json]], bool]) -> list[Json]:
    deadline = time.monotonic() + 30
    with plane.http() as http:
        while True:
            page = http.get(f"/webhook_endpoints/{endpoint_id}/deliveries").json()
            if done(page["data"]) or time.monotonic() > deadline:
                return list(page["data"])
            time.sleep(0.1)


def _endpoint(plane: InProcessControlPlane, receiver: CountingReceiver) -> Json:
    with plane.http() as http:
        made: Json = http.post("/webhook_endpoints", json={
            "name": "deliveries", "url": f"http://127.0.0.1:{receiver.port}/hook",
            "event_types": [CANCELLED]}).json()
    return made


def test_delivered_events_show_the_receivers_status(plane: InProcessControlPlane) -> None:
    with CountingReceiver(204) as receiver:
        endpoint = _endpoint(plane, receiver)
        for job in ("ftjob-one", "ftjob-two", "ftjob-three"):
            _job_cancelled(plane, endpoint, job)
        data = _wait_for(plane, endpoint["id"], lambda d: len(d) == 3 and all(
            x["status"] == "delivered" for x in d))
    assert receiver.posts == 3
    for delivery in data:
        assert delivery["object"] == "webhook_endpoint.delivery"
        assert delivery["webhook_endpoint_id"] == endpoint["id"]
        assert delivery["event_type"] == CANCELLED
        assert delivery["event_id"].startswith("evt_")
        assert delivery["status"] == "delivered" and delivery["next_attempt_at"] is None
        assert delivery["finished_at"] >= delivery["created_at"]
        assert delivery["attempt_count"] == 1
        (attempt,) = delivery["attempts"]
        assert attempt["attempt"] == 1 and attempt["delivered"] is True
        assert (attempt["status_code"], attempt["error"]) == (204, None)
    assert len({d["event_id"] for d in data}) == 3

    # Paged newest first with the list helpers' cursor.
    with plane.http() as http:
        path = f"/webhook_endpoints/{endpoint['id']}/deliveries"
        first = http.get(path, params={"limit": 2}).json()
        rest = http.get(path, params={"limit": 2, "after": first["last_id"]}).json()
        assert first["has_more"] is True and rest["has_more"] is False
        assert [d["id"] for d in first["data"] + rest["data"]] == [d["id"] for d in data]
        bad = http.get(path, params={"limit": 101})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
        text = http.get(path).text
        http.delete(f"/webhook_endpoints/{endpoint['id']}")
        gone = http.get(path)
    assert endpoint["signing_secret"] not in text
    assert gone.status_code == 404


def test_a_failing_receiver_shows_retries_without_what_it_answered(
        plane: InProcessControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliveries, "ATTEMPTS_SHOWN", 2)  # a delivery retried for days
    with CountingReceiver(503) as receiver:
        endpoint = _endpoint(plane, receiver)
        _job_cancelled(plane, endpoint, "ftjob-failing")
        (delivery,) = _wait_for(plane, endpoint["id"], lambda d: bool(d) and any(
            a["attempt"] >= 4 for a in d[0]["attempts"]))
        with plane.http() as http:
            http.delete(f"/webhook_endpoints/{endpoint['id']}")  # its retries stop with it
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"] >= delivery["attempts"][-1]["attempted_at"]
    # The latest attempts only, oldest of them first; the count says how many there were.
    numbers = [a["attempt"] for a in delivery["attempts"]]
    assert len(numbers) == 2 and numbers[1] == numbers[0] + 1 >= 4
    assert delivery["attempt_count"] >= numbers[1]
    for attempt in delivery["attempts"]:
        assert attempt["delivered"] is False and attempt["status_code"] is None
        assert "503" not in attempt["error"] and "2xx" in attempt["error"]


def test_another_projects_endpoint_is_a_404(plane: InProcessControlPlane) -> None:
    with CountingReceiver() as receiver:
        endpoint = _endpoint(plane, receiver)
        _job_cancelled(plane, endpoint, "ftjob-private")
        _wait_for(plane, endpoint["id"], lambda d: bool(d))
    with plane.http(plane.other_key()) as attacker:
        answer = attacker.get(f"/webhook_endpoints/{endpoint['id']}/deliveries")
    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "webhook_endpoint_id"
    with plane.http() as http:
        http.delete(f"/webhook_endpoints/{endpoint['id']}")
