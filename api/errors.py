"""OpenAI's error envelope for every failure: `{"error": {message, type, param, code}}`."""

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tuneserve.api")

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
        if status == 409:
            # A conflict will not go away by retrying; tell the openai client not to.
            self.headers.setdefault("x-should-retry", "false")


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
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            err = APIError(404, message, code="unknown_url")
        elif exc.status_code == 405:
            err = APIError(405, f"Method {request.method} is not allowed on {request.url.path}.")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        err.headers.update(exc.headers or {})
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(APIError(500, "The server had an error processing your request.",
                                       type="server_error"))
