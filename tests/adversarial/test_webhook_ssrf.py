"""A tenant points a webhook at the node's own network (security review M3): loopback, a
private service (the Ray dashboard), the cloud metadata service, or the same addresses
disguised inside IPv6 (IPv4-mapped, NAT64, 6to4); or at a name that resolves to a public
address when it is checked and to 127.0.0.1 when it is connected to (DNS rebinding); or uses
`test` as a port scanner, reading the receiver's status, the connect error or the timing."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from api.errors import APIError
from api.settings import Settings
from api.webhook_endpoints import service
from storage.models import WebhookEndpoint
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.ports import free_port
from tests.support.receivers import CountingReceiver

SUCCEEDED = "fine_tuning.job.succeeded"
PRIVATE_URLS = [
    "http://127.0.0.1:6379/",  # a Redis beside tuneserve
    "http://10.0.0.5:8265/",  # a Ray dashboard on the cluster network
    "http://169.254.169.254/",  # the cloud metadata service
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://localhost/",
    "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
    "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata service
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0:8000/",
    "http://224.0.0.1/",  # multicast
    "http://127.1/",  # 127.0.0.1 as the resolver reads it
]
# A public address (an IANA one) that the rebinding test never really connects to.
PUBLIC = "192.0.43.10"


@pytest.fixture
def receiver() -> Iterator[CountingReceiver]:
    with CountingReceiver() as r:
        yield r


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_addresses_are_refused_when_saved(control_plane: InProcessControlPlane,
                                                  attacker_key: str, url: str) -> None:
    attacker = control_plane.client(attacker_key)
    with pytest.raises(openai.BadRequestError) as err:
        attacker.webhooks.create(name="scan", url=url, event_types=[SUCCEEDED])
    assert err.value.param == "url", err.value.message

    hook = attacker.webhooks.create(name="ok", url="https://hooks.example.invalid/hook",
                                    event_types=[SUCCEEDED])
    try:
        with pytest.raises(openai.BadRequestError) as err:
            attacker.webhooks.update(hook.id, url=url)
        assert err.value.param == "url"
    finally:
        attacker.webhooks.delete(hook.id)


def test_addresses_inside_ipv6_are_judged_by_the_ipv4_they_carry() -> None:
    from api.webhooks.addresses import is_public, parse_address

    for text in ("::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a9fe:a9fe::",
                 "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b:1::808:808", "::a00:1",
                 "fe80::1%eth0", "ff02::1", "::", "::1"):
        address = parse_address(text)
        assert address is not None and not is_public(address), text
    for text in ("8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::",
                 "::ffff:8.8.8.8"):
        address = parse_address(text)
        assert address is not None and is_public(address), text


def test_a_name_that_rebinds_to_loopback_is_not_posted_to(
    monkeypatch: pytest.MonkeyPatch, receiver: CountingReceiver,
) -> None:
    """The name answers a public address to the first lookup and 127.0.0.1 to every later
    one: the POST may go to the public address (which was checked) or nowhere, never to the
    receiver on loopback."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, anyio.connect_tcp
    lookups: list[str] = []

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA bytes
        if name != "rebind.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(PUBLIC if not lookups else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (lookups[-1], int(port)))]

    connected: list[str] = []

    async def recording_connect(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        connected.append(str(remote_host))
        if str(remote_host) == PUBLIC:
            raise OSError("this test reaches no real public address")
        return await real_connect(remote_host, remote_port, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(anyio, "connect_tcp", recording_connect)

    endpoint = WebhookEndpoint(id="whe_rebind", url=f"http://rebind.example:{receiver.port}/",
                               secret="whsec_" + "A" * 44)
    settings = Settings(webhook_allow_private_urls=False, webhook_timeout_seconds=1.0)
    with pytest.raises(APIError):
        anyio.run(service.send_test, endpoint, SUCCEEDED, settings)
    assert receiver.posts == 0
    assert connected == [PUBLIC]  # the address that was checked, not the name again
    assert lookups == [PUBLIC]


@pytest.fixture(scope="module")
def opted_in(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[InProcessControlPlane]:
    """A control plane whose operator lets webhooks reach private addresses."""
    with control_plane_in_process(request, "sqlite", tmp_path_factory.mktemp("webhooks-private"),
                                  webhook_allow_private_urls=True,
                                  webhook_timeout_seconds=1) as plane:
        yield plane


def _test_answer(server: InProcessControlPlane, url: str) -> tuple[httpx.Response, float]:
    with server.http() as http:
        made = http.post("/webhook_endpoints", json={"name": "probe", "url": url,
                                                     "event_types": [SUCCEEDED]})
        assert made.status_code == 200, made.text
        started = time.monotonic()
        answer = http.post(f"/webhook_endpoints/{made.json()['id']}/test",
                           json={"event_type": SUCCEEDED})
        return answer, time.monotonic() - started


def test_test_says_nothing_a_port_scan_could_use(opted_in: InProcessControlPlane,
                                                 tmp_path: Path) -> None:
    closed_port = free_port()
    with CountingReceiver(status=404) as not_found:
        answers = {
            "closed port": _test_answer(opted_in, f"http://127.0.0.1:{closed_port}/"),
            "HTTP 404": _test_answer(opted_in, f"http://127.0.0.1:{not_found.port}/admin"),
        }
    errors = set()
    for what, (answer, seconds) in answers.items():
        assert answer.status_code == 400, (what, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "webhook_delivery_failed", (what, error)
        for detail in ("404", str(closed_port), "refused", "rrno", "Connect", "127.0.0.1"):
            assert detail not in error["message"], (what, detail, error["message"])
        # Answered when the attempt's second is up, however soon it failed.
        assert seconds >= 0.9, (what, seconds)
        errors.add(repr(error))
    assert len(errors) == 1, errors  # a closed port and a 404 look alike
