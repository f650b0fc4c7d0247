"""One signed POST of an event to an endpoint, per Standard Webhooks (as OpenAI sends them
and `client.webhooks.unwrap` checks them)."""

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from api.webhooks.addresses import lookup, parse_address, refused_addresses, refused_host

USER_AGENT = "tuneserve-webhooks/1.0"
# What a URL's name resolves to: `(host, port) -> addresses`.
Resolver = Callable[[str, int], Awaitable[list[str]]]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: str, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`, keyed by the secret's
    base64-decoded part after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


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


def default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Refused(Exception):
    """The URL's host is, or resolves to, an address this server does not send to."""


async def resolve(host: str, port: int) -> list[str]:
    return await asyncio.get_running_loop().run_in_executor(None, lookup, host, port)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying context for every attempt (making one reads the CA bundle)."""
    return httpx.create_ssl_context()


async def send(url: str, signing_secrets: list[str], webhook_id: str, body: str, *,
               timeout: float, allow_private: bool,
               resolver: Resolver = resolve) -> Outcome:
    """POSTs `body` once; the receiver's status, or why there is none. A redirect is not
    followed (a failure, as at OpenAI), and the receiver's body is never read.

    Unless private addresses are allowed, the URL's name is resolved once, every address it
    resolves to must be public, and the POST goes to those addresses themselves (the URL's
    name kept in `Host` and for TLS), so a name that resolves differently a moment later
    (DNS rebinding) cannot redirect it. Each attempt has its own connections: none is
    shared with another endpoint's (nor are cookies)."""
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
    attempt = _post(url, headers, body.encode(), timeout=timeout,
                    allow_private=allow_private, resolver=resolver)
    try:
        # httpx bounds each phase; this bounds the whole attempt, the lookup included (a
        # receiver that trickles, a resolver that stalls).
        return Outcome(status_code=await asyncio.wait_for(attempt, timeout))
    except TimeoutError:
        return Outcome(error=f"no answer within {timeout:g} s")
    except Refused as exc:
        return Outcome(error=f"refused: {exc}")
    except OSError as exc:  # the lookup failed
        return Outcome(error=f"cannot resolve the URL's host: {exc}"[:500])
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500])


async def _post(url: str, headers: dict[str, str], content: bytes, *, timeout: float,
                allow_private: bool, resolver: Resolver) -> int:
    target = httpx.URL(url)
    # Proxies from the environment are not used when the address is checked: a proxy would
    # resolve the name again itself.
    async with httpx.AsyncClient(timeout=timeout, verify=_tls_context(),
                                 trust_env=allow_private) as http:
        if allow_private:
            return await _status(http, target, headers, content)
        host = target.raw_host.decode("ascii")
        refused = refused_host(host)
        if refused is not None:
            raise Refused(refused)
        if parse_address(host) is not None:
            return await _status(http, target, headers, content)
        addresses = await resolver(host, default_port(target))
        refused = refused_addresses(host, addresses)
        if refused is not None or not addresses:
            raise Refused(refused or f"{host} resolves to no address")
        pinned_headers = {**headers, "host": target.netloc.decode("ascii")}
        sni = {"sni_hostname": host}
        # The next address only when one could not be connected to (nothing was sent).
        for address in addresses[:-1]:
            with contextlib.suppress(httpx.ConnectError):
                return await _status(http, target.copy_with(host=address), pinned_headers,
                                     content, sni)
        return await _status(http, target.copy_with(host=addresses[-1]), pinned_headers,
                             content, sni)


async def _status(http: httpx.AsyncClient, url: httpx.URL, headers: dict[str, str],
                  content: bytes, extensions: dict[str, str] | None = None) -> int:
    async with http.stream("POST", url, content=content, headers=headers,
                           extensions=extensions) as answer:
        return answer.status_code
