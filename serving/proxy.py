"""Requests forwarded to the replica a lease names, streamed back as they are generated.

The proxy touches as little as it can on the way back: answers come back byte for byte except
for the `model` field, which is put back to the name the client asked for. Errors are the
exception: vLLM's are re-wrapped in OpenAI's envelope, without the engine's internal names or
the server's paths, and a replica that dies mid-stream ends the stream with an error event."""

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from serving.adapters import Lease
from serving.engine import EngineTimeout, EngineUnavailable, Replica, send_with_retry
from storage.redact import redact

log = logging.getLogger("tuneserve.proxy")


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Stream:
    """An upstream stream: the SSE bytes to send on, and how to close it even if nobody ever
    iterates them (the client left before the response started)."""

    chunks: AsyncIterator[bytes]
    response: httpx.Response

    async def aclose(self) -> None:
        await self.response.aclose()


def _renamer(lease: Lease) -> tuple[bytes, bytes] | None:
    if lease.served == lease.requested:
        return None
    # vLLM writes compact JSON, so the field appears exactly like this.
    return (b'"model":' + json.dumps(lease.served).encode(),
            b'"model":' + json.dumps(lease.requested).encode())


_CODES = {400: "invalid_request", 404: "model_not_found", 413: "request_too_large",
          422: "invalid_request", 429: "rate_limit_exceeded"}
_TYPES = {400: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}
_CONTEXT = re.compile(r"maximum context length|context length|too long", re.I)


def upstream_error(status: int, raw: bytes, lease: Lease) -> dict[str, Any]:
    """vLLM's error as OpenAI writes one: a string `code`, OpenAI's `type`, the model name the
    client used; nothing that names the engine's adapters or the server's files."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message, param = str(error.get("message") or ""), error.get("param")
    elif isinstance(data, dict) and "detail" in data:
        message, param = str(data["detail"]), None
    else:
        message, param = "", None
    if status >= 500 or not message:
        log.warning("engine %s answered %d: %s", lease.engine.name, status, raw[:2000])
        message = ("The model server could not complete the request." if status >= 500
                   else f"The request was refused by the model server ({status}).")
    message = redact(message.replace(lease.served, lease.requested))
    code = _CODES.get(status, "engine_error")
    if status == 400 and _CONTEXT.search(message):
        code = "context_length_exceeded"
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param if isinstance(param, str) else None, "code": code}}


def _traced(request_id: str | None) -> dict[str, str]:
    """vLLM names its request after `x-request-id`. A suffix keeps it unique there: the
    client chose the id, and two requests in flight with one id would collide."""
    if request_id is None:
        return {}
    return {"x-request-id": f"{request_id}-{secrets.token_hex(4)}"}


async def _post(path: str, body: dict[str, Any], lease: Lease, request_id: str | None,
                stream: bool = False) -> httpx.Response:
    """POSTs to the lease's replica. A transport failure is raised as what it means for the
    request: a read timeout is EngineTimeout (the replica is alive but slow, so it stays in
    rotation), anything else EngineUnavailable, with the replica marked unreachable."""
    engine = lease.engine
    request = engine.http.build_request("POST", path, json=body, headers=_traced(request_id))
    try:
        return await send_with_retry(engine.http, request, stream=stream)
    except httpx.ReadTimeout as exc:
        raise EngineTimeout from exc
    except httpx.TransportError as exc:
        engine.mark_unreachable()
        raise EngineUnavailable from exc


class Proxy:
    async def complete(self, path: str, body: dict[str, Any], lease: Lease,
                       request_id: str | None = None) -> Answer:
        response = await _post(path, body, lease, request_id)
        if response.status_code != 200:
            return Answer(response.status_code,
                          upstream_error(response.status_code, response.content, lease))
        lease.engine.note_answer()
        data = response.json()
        if isinstance(data, dict) and "model" in data:
            data["model"] = lease.requested
            if "choices" in data:  # a (chat) completion
                _drop_absent(data)
        return Answer(200, data)

    async def stream(self, path: str, body: dict[str, Any], lease: Lease,
                     request_id: str | None = None) -> Stream | Answer:
        """Opens the upstream stream, or answers its error. Closing the stream (the client
        went away) closes the upstream request, and vLLM then aborts the generation."""
        response = await _post(path, body, lease, request_id, stream=True)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            return Answer(response.status_code,
                          upstream_error(response.status_code, response.content, lease))
        lease.engine.note_answer()
        return Stream(_events(response, _renamer(lease), lease.engine), response)


# Fields OpenAI sends as null; vLLM writes null for other absent ones, which OpenAI omits.
_NULLABLE = {"content", "refusal", "logprobs", "finish_reason"}


def _drop_absent(completion: dict[str, Any]) -> None:
    for key in [k for k, v in completion.items() if v is None]:
        del completion[key]
    for choice in completion.get("choices", []):
        for key in [k for k, v in choice.items() if v is None and k not in _NULLABLE]:
            del choice[key]
        message = choice.get("message") or {}
        for key in [k for k, v in message.items() if v is None and k not in _NULLABLE]:
            del message[key]
        if message.get("tool_calls") == []:
            del message["tool_calls"]
    usage = completion.get("usage") or {}
    for key in [k for k, v in usage.items() if v is None]:
        del usage[key]


_LOST = ("data: " + json.dumps({"error": {
    "message": "The model server stopped while generating this answer; try again.",
    "type": "server_error", "param": None, "code": "engine_unavailable"}}) + "\n\n").encode()
_STALLED = ("data: " + json.dumps({"error": {
    "message": "The model server sent nothing more in time; try a smaller max_tokens.",
    "type": "server_error", "param": None, "code": "engine_timeout"}}) + "\n\n").encode()


async def _events(response: httpx.Response, rename: tuple[bytes, bytes] | None,
                  engine: Replica) -> AsyncIterator[bytes]:
    pending = b""
    try:
        async for chunk in response.aiter_raw():
            if rename is None:
                yield chunk
                continue
            pending += chunk
            # Rename whole events only: a chunk boundary may cut the field in two.
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                yield pending[: cut + 2].replace(rename[0], rename[1])
                pending = pending[cut + 2 :]
        if pending:
            yield pending.replace(*rename) if rename else pending
        engine.note_answer()
    except httpx.TransportError as exc:
        # The replica died under the stream, or stalled (alive but busy: it stays in
        # rotation): say so in the stream (the openai client raises it as an APIError)
        # instead of cutting the connection.
        stalled = isinstance(exc, httpx.ReadTimeout)
        if not stalled:
            engine.mark_unreachable()
        if pending and rename:
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                yield pending[: cut + 2].replace(*rename)
        yield _STALLED if stalled else _LOST
    finally:
        await response.aclose()
