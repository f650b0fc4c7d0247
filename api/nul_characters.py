"""Refuses NUL characters (U+0000) in what a request names: PostgreSQL's text cannot hold one,
so a string with a NUL, compared in a query or stored, fails the statement (a 500 there),
where SQLite takes it. No id, name or value the API stores or looks up has one, so a request
carrying one in its path, its query or its JSON body is a 400 naming where it is, on every
database alike."""

import json
from typing import Any

from fastapi import Request

from api.errors import APIError

NUL = "\x00"
# Their prompts and samples are text for a model, never stored: only the model they name is
# looked up.
MODEL_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})


def _refused(param: str | None, where: str) -> APIError:
    named = f"'{param}'" if param else "the request body"
    return APIError(400, f"Invalid value for {named}: {where} may not hold NUL (\\u0000) "
                    "characters.", param=param, code="invalid_value")


def nul_in(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where the first NUL in a parsed JSON value is: the names of the objects' keys down to
    it (list positions left out, as the API's errors name fields), or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, list):
        for item in value:
            found = nul_in(item, path)
            if found is not None:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return path
            found = nul_in(item, (*path, key))
            if found is not None:
                return found
    return None


async def refuse_nul_characters(request: Request) -> None:
    """A dependency of every `/v1` route."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise _refused(name, "a path parameter")
    for key, value in request.query_params.multi_items():
        if NUL in key or NUL in value:
            raise _refused(key.replace(NUL, "") or None, "a query parameter")
    route = request.scope.get("route")
    # Only a JSON body FastAPI has read (and kept) already: a form is streamed by its route.
    if getattr(route, "body_field", None) is None:
        return
    raw = await request.body()
    if b"\\u0000" not in raw:  # JSON carries a NUL only as this escape
        return
    try:
        body = json.loads(raw)
    except ValueError:
        return  # FastAPI answered it already
    if getattr(route, "path", "") in MODEL_ROUTES:
        body = {"model": body.get("model")} if isinstance(body, dict) else None
    found = nul_in(body)
    if found is not None:
        raise _refused(".".join(found) or None, "a JSON string")
