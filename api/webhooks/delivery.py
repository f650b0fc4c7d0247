"""One signed POST of an event to an endpoint, per Standard Webhooks (as OpenAI sends them
and `client.webhooks.unwrap` checks them)."""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

USER_AGENT = "tuneserve-webhooks/1.0"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: str, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`, keyed by the secret's
    base64-decoded part after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def private_host(host: str) -> bool:
    """True for `localhost` and for addresses that are not on the public internet."""
    if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name: what it resolves to is checked when it is sent to


async def _refused(url: str) -> str | None:
    """Why a URL may not be sent to when private addresses are not allowed; None if it may.
    The name is resolved here, at each attempt, as the endpoint's DNS may change."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if private_host(host):
        return f"refused: {host} is a private address"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    if any(not ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos):
        return f"refused: {host} resolves to a private address"
    return None


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: all of it that logs show, as receivers (Slack's, for
    one) carry their secret in the path or query, and some in the user info."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        return "(an invalid URL)"
    if not target.scheme or not target.raw_host:
        return "(an invalid URL)"
    port = f":{target.port}" if target.port is not None else ""
    host = target.raw_host.decode("ascii")
    return f"{target.scheme}://{f'[{host}]' if ':' in host else host}{port}"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def send(http: httpx.AsyncClient, url: str, signing_secrets: list[str],
               webhook_id: str, body: str, *, timeout: float,
               allow_private: bool) -> Outcome:
    """POSTs `body` once; the receiver's status, or why there is none. A redirect is not
    followed (a failure, as at OpenAI), and the receiver's body is never read."""
    refused = None if allow_private else await _refused(url)
    if refused is not None:
        return Outcome(error=refused)
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        # While a rotated secret is kept, one signature for each: receivers accept any.
        "webhook-signature": " ".join(signature(s, webhook_id, timestamp, body)
                                      for s in signing_secrets),
    }

    async def post() -> int:
        async with http.stream("POST", url, content=body.encode(), headers=headers) as answer:
            return answer.status_code

    try:
        # httpx bounds each phase; this bounds the whole attempt (a receiver that trickles).
        return Outcome(status_code=await asyncio.wait_for(post(), timeout))
    except TimeoutError:
        return Outcome(error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500])
