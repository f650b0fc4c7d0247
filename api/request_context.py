"""The outermost layer of every HTTP request: its id, its timing and its access-log line.

Every response carries `x-request-id` (the client's, when it sent a usable one, else a new
`req_…`) and `openai-processing-ms`, as OpenAI's do. The id lives in a context variable for
the request's whole life, so every log line written on its behalf names it (api/logs.py),
and the model server gets it too (serving/proxy.py)."""

import contextvars
import logging
import re
import secrets
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import HTTP_LATENCY

log = logging.getLogger("tuneserve.access")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# A client's id is echoed only if it cannot break a log line or a header.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes and scrapes: logged at DEBUG, so the log shows what users did.
_QUIET = frozenset({"/health", "/ready", "/metrics"})


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


def _route(scope: Scope) -> str:
    """The matched route's template (bounded label values), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return path or "/"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if _CLIENT_ID.match(given) else new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                headers["openai-processing-ms"] = str(round((time.perf_counter() - started)
                                                            * 1000))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            HTTP_LATENCY.labels(scope["method"], route, str(status)).observe(seconds)
            log.log(logging.DEBUG if scope["path"] in _QUIET else logging.INFO,
                    "%s %s %d %.0f ms", scope["method"], scope["path"], status, seconds * 1000)
            request_id.reset(token)
