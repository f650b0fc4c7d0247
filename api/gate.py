"""What every `/v1` and `/api/v1` (Tinker) request passes before a route sees it: a valid API
key, then a body no bigger than its route allows.

An ASGI middleware, so both hold before a byte of the body is read: a request without a
valid key is answered 401 unread (FastAPI would read and parse the body before its auth
dependency runs), and a body over its route's cap is refused by its declared length up front
or, sent without one, as soon as the count passes the cap, never buffered beyond it. The two
streaming upload routes count against their own file and part limits as they store."""

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.background.key_cache import KeyCache
from api.errors import APIError, error_response
from api.services import services_of
from storage.models import Project
from training.tinker.wire import MAX_FORWARD_BACKWARD_BYTES

# Routes whose body is a file, streamed to storage and counted there.
_STREAMED = re.compile(r"^/v1/(files|uploads/[^/]+/parts)/?$")
_INFERENCE = re.compile(r"^/v1/(chat/completions|completions|responses)/?$")
# The Tinker API's routes (api/tinker/): keyed by `X-API-Key`, capped as control routes but
# for forward_backward, whose protobuf body carries a batch of tokens.
TINKER_PREFIX = "/api/v1/"
# Tinker's external weights behind signed URLs: fetched with no key (api/tinker/downloads.py).
SIGNED_DOWNLOADS = "/api/v1/external_weights/"
_TINKER_FORWARD_BACKWARD = "/api/v1/forward_backward"


class RequestTooLarge(StarletteHTTPException):
    """Raised from the body's stream; an HTTPException, so FastAPI lets it through as is."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message)
        self.error = error


def _too_large(cap: int) -> APIError:
    return APIError(413, f"The request body is larger than this route allows ({cap} bytes).",
                    code="request_too_large")


async def authenticate_tinker(keys: KeyCache, key: str | None) -> Project:
    """The Tinker SDK sends its key as `X-API-Key` (a `tml-` key: `keys create --tinker`)."""
    secret = (key or "").strip()
    if not secret:
        raise APIError(401, "You didn't provide an API key. Send it as 'X-API-Key: YOUR_KEY'.",
                       code="missing_api_key")
    return await _project_of(keys, secret)


async def authenticate(keys: KeyCache, authorization: str | None) -> Project:
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    return await _project_of(keys, secret)


async def _project_of(keys: KeyCache, secret: str) -> Project:
    project = await keys.project(secret)
    if project is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return project


class RequestGate:
    def __init__(self, app: ASGIApp, inference_cap: int, control_cap: int) -> None:
        self.app, self.inference_cap, self.control_cap = app, inference_cap, control_cap

    def cap(self, method: str, path: str) -> int | None:
        """The route's body cap in bytes; None for the streamed uploads."""
        if method == "POST" and _STREAMED.match(path):
            return None
        if path == _TINKER_FORWARD_BACKWARD:
            return MAX_FORWARD_BACKWARD_BYTES
        return self.inference_cap if _INFERENCE.match(path) else self.control_cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tinker = scope["type"] == "http" and scope["path"].startswith(TINKER_PREFIX)
        if (scope["type"] != "http" or not (scope["path"].startswith("/v1/") or tinker)
                # A signed download URL (api/tinker/downloads.py) carries its own key.
                or scope["path"].startswith(SIGNED_DOWNLOADS)):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cap = self.cap(scope["method"], scope["path"])
        keys = services_of(scope["app"]).keys
        try:
            project = await (authenticate_tinker(keys, headers.get("x-api-key")) if tinker
                             else authenticate(keys, headers.get("authorization")))
            declared = headers.get("content-length")
            if cap is not None and declared and declared.isdigit() and int(declared) > cap:
                raise _too_large(cap)
        except APIError as err:
            await error_response(err)(scope, receive, send)
            return
        scope.setdefault("state", {})["project"] = project
        await self.app(scope, receive if cap is None else _counted(receive, cap), send)


def _counted(receive: Receive, cap: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise RequestTooLarge(_too_large(cap))
        return message

    return counted
