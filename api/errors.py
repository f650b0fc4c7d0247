"""OpenAI's error envelope for every failure: `{"error": {message, type, param, code}}`."""

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.metrics import BACKEND_ERRORS
from storage.availability import OUTAGE_ERRORS, disk_full, unavailable_part

log = logging.getLogger("tuneserve.api")

# What a client is told to wait after a storage or DB outage answered its request.
OUTAGE_RETRY_AFTER_SECONDS = "10"

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error a client can act on; raised anywhere below a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = dict(headers or {})
        if status in (409, 507):
            # A conflict, or a full disk, will not go away by retrying at once (the client
            # would send a large upload twice more); tell the openai client not to.
            self.headers.setdefault("x-should-retry", "false")


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorObject


_DESCRIPTIONS = {
    400: "Invalid request; `param` names the field",
    401: "No API key, or not a valid one",
    403: "Not this project's to change, or over the project's storage quota",
    404: "No such object, or not this project's",
    409: "Not possible in the object's current state",
    410: "The object has ended (a Tinker session finished or gone quiet)",
    413: "The request body is larger than the route allows",
    429: "Over the project's requests or tokens per minute (`retry-after`)",
    500: "The server failed to handle the request",
    503: "The model server, the blob store or the DB is unreachable for now (`retry-after`)",
    504: "The model server took the request but did not answer in time",
    507: "The server's storage is full",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


# What any `/v1` route may answer: a bad request, no key (api/gate.py), a body over its cap,
# a storage or DB outage.
COMMON_ERRORS = error_responses(400, 401, 413, 500, 503)


def document_errors(app: FastAPI) -> None:
    """The app's OpenAPI document without FastAPI's 422: validation errors are 400s here,
    in OpenAI's envelope, as every route's `responses` say."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def not_found(kind: str, object_id: str, param: str = "id") -> APIError:
    return APIError(404, f"No such {kind}: '{object_id}'", param=param, code="not_found")


def error_response(err: APIError) -> JSONResponse:
    body = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return JSONResponse({"error": body}, status_code=err.status, headers=err.headers)


# Segments pydantic adds to a location for union members and validators; not field names.
_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none", "constrained-int",
              "constrained-float", "constrained-str"}


def _param_of(loc: tuple[Any, ...]) -> str | None:
    names = [str(p) for p in loc if not isinstance(p, int)]
    names = [n for n in names if n not in _TYPE_TAGS and "[" not in n and "(" not in n]
    return ".".join(names) or None


def validation_error(errors: Sequence[Any], *, located: bool = True) -> APIError:
    """The first of pydantic's errors as an OpenAI error naming the field. FastAPI's own
    errors are `located`: their loc starts with `body`, `query` or `path`."""
    # In a union (`"auto"` or a number), the literal's complaint is the least useful one.
    first = next((e for e in errors if e.get("type") != "literal_error"), errors[0])
    loc = tuple(first.get("loc", ()))
    param = _param_of(loc[1:] if located else loc)
    if first.get("type") == "missing" and param is None:  # no body at all
        return APIError(400, "This request needs a JSON body.", code="missing_body")
    if first.get("type") == "missing":
        return APIError(
            400, f"Missing required parameter: '{param}'.", param=param,
            code="missing_required_parameter",
        )
    if first.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if first.get("type") == "json_invalid":
        return APIError(400, "The request body is not valid JSON.", code="invalid_json")
    if param is None:
        return APIError(400, f"Invalid request body: {first.get('msg', 'invalid')}.",
                        code="invalid_request_body")
    value = first.get("input")
    shown = "" if isinstance(value, dict | list) else f" {value!r}"
    return APIError(
        400, f"Invalid value{shown} for '{param}': {first.get('msg', 'invalid')}.",
        param=param, code="invalid_value",
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = getattr(exc, "error", None)  # one of ours, raised where only these pass
        if isinstance(error, APIError):
            return error_response(error)
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            err = APIError(404, message, code="unknown_url")
        elif exc.status_code == 405:
            err = APIError(405, f"Method {request.method} is not allowed on {request.url.path}.")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        err.headers.update(exc.headers or {})
        return error_response(err)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        part = unavailable_part(exc)
        if part is not None:
            # An outage, not a bug: the client may retry; nothing it sent was kept.
            log.warning("%s %s: the %s is unreachable: %r", request.method, request.url.path,
                        part, exc)
            BACKEND_ERRORS.labels(part).inc()
            return error_response(APIError(
                503, f"The {part} is unreachable right now; try again shortly.",
                type="server_error", code=f"{part}_unavailable",
                headers={"retry-after": OUTAGE_RETRY_AFTER_SECONDS}))
        if disk_full(exc):
            log.error("%s %s: the disk is full: %r", request.method, request.url.path, exc)
            BACKEND_ERRORS.labels("disk").inc()
            return error_response(APIError(
                507, "The server's storage is full; nothing of this request was kept.",
                type="server_error", code="storage_full"))
        log.exception("unhandled error", exc_info=exc)
        return error_response(APIError(500, "The server had an error processing your request.",
                                       type="server_error"))

    # The storage and DB libraries' errors are answered inside the app, so the connection
    # stays usable; Starlette's last-resort handler for any other exception closes it.
    for kind in (*OUTAGE_ERRORS, OSError, Exception):
        app.add_exception_handler(kind, _unexpected)
