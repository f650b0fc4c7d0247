"""What every inference route shares: the tenant's request goes to the replica its model's
lease names, with the project's prefix-cache salt, and comes back as OpenAI writes it. The
lease is held until the response's last byte, so the adapter cannot be unloaded under it."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api import request_context
from api.errors import APIError
from api.metrics import GENERATED_TOKENS, GENERATION_SECONDS, TIME_TO_FIRST_TOKEN
from api.services import Serving
from serving.adapters import AdapterLoadError, Lease, ModelNotFound, ModelNotServed
from serving.engine import EngineTimeout
from serving.proxy import Answer, Stream
from serving.send import SERVING_ERRORS, send

RETRY_AFTER_SECONDS = "5"

# Puts a non-streamed answer together from the engine's SSE bytes (see `forward`).
Collector = Callable[[AsyncIterator[bytes]], Awaitable[dict[str, Any]]]


class Keeper(Protocol):
    """Sees a successful answer on its way to the client (the Responses API stores it)."""

    def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...

    async def answer(self, body: Any) -> Any: ...


def unavailable() -> APIError:
    return APIError(503, "The model server is starting or restarting; try again shortly.",
                    type="server_error", code="engine_unavailable",
                    headers={"retry-after": RETRY_AFTER_SECONDS})


def _serving(serving: Serving | None) -> Serving:
    if serving is None:
        raise APIError(503, "Serving is turned off on this server.", type="server_error",
                       code="serving_disabled")
    return serving


def check_token_budget(n: int | None, max_tokens: int | None, max_model_len: int,
                       budget: int, tokens_param: str = "max_tokens") -> None:
    """One request may not ask for more generated tokens than `budget` in all."""
    asked = (n or 1) * (max_tokens or max_model_len)
    if asked > budget:
        param = tokens_param if max_tokens else "n"
        raise APIError(400, f"This request asks for up to {asked} generated tokens "
                       f"(n x max_tokens); this server allows at most {budget} per request.",
                       param=param, code="invalid_value")


def _as_api_error(exc: Exception, model: str) -> APIError:
    if isinstance(exc, ModelNotFound):
        return APIError(404, f"The model '{model}' does not exist or you do not have "
                        "access to it.", param="model", code="model_not_found")
    if isinstance(exc, ModelNotServed):
        return APIError(400, f"The model '{model}' is not served by this server.",
                        param="model", code="model_not_served")
    if isinstance(exc, EngineTimeout):
        return APIError(504, "The model server did not answer in time; try a smaller "
                        "max_tokens, or streaming.", type="server_error", code="engine_timeout")
    if isinstance(exc, AdapterLoadError):
        return APIError(500, f"The model '{model}' could not be loaded by the model server; "
                        "the operator's logs say why.", type="server_error",
                        code="model_load_failed")
    return unavailable()


class _LeasedStream(StreamingResponse):
    """Releases the lease, and closes the upstream stream, however the response ends."""

    def __init__(self, stream: Stream, lease: Lease, started: float,
                 keep: Keeper | None) -> None:
        chunks = stream.chunks if keep is None else keep.stream(stream.chunks)
        super().__init__(_timed(chunks, lease.engine.base, started),
                         media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.stream, self.lease = stream, lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.lease.release()
            await self.stream.aclose()


async def _timed(chunks: AsyncIterator[bytes], base: str,
                 started: float) -> AsyncIterator[bytes]:
    """The stream as is, timed for /metrics: vLLM sends its first event with the first
    token, and one event per token after it. Each chunk is counted before it is passed
    on, so a client that has read the whole stream already sees it in /metrics."""
    first: float | None = None
    timed = False
    async for chunk in chunks:
        events = chunk.count(b"data: {")
        if first is None:
            first = time.perf_counter()
            TIME_TO_FIRST_TOKEN.labels(base).observe(first - started)
            events -= 1  # the role event carries no token
        GENERATED_TOKENS.labels(base).inc(max(0, events))
        if b"data: [DONE]" in chunk:
            GENERATION_SECONDS.labels(base).inc(time.perf_counter() - started)
            timed = True
        yield chunk
    if first is not None and not timed:  # the stream broke off before its end
        GENERATION_SECONDS.labels(base).inc(time.perf_counter() - started)


def _count_usage(answer: Answer, base: str, started: float) -> None:
    usage = answer.body.get("usage") if isinstance(answer.body, dict) else None
    if answer.status == 200 and isinstance(usage, dict):
        GENERATED_TOKENS.labels(base).inc(usage.get("completion_tokens") or 0)
        GENERATION_SECONDS.labels(base).inc(time.perf_counter() - started)


async def forward(request: Request, serving: Serving | None, project_id: str, model: str,
                  path: str, payload: dict[str, Any], stream: bool,
                  collect: Collector | None = None, keep: Keeper | None = None) -> Response:
    """The project's request for `model`, answered by the replica that serves it (a 503 with
    serving turned off here). With `collect`, an answer the client wants whole is generated
    streamed (`payload` asks for that) and `collect` puts it together from the stream.
    `keep` sees a successful answer, streamed or whole, before the client does."""
    serving = _serving(serving)
    started = time.perf_counter()
    try:
        out, lease = await send(serving.adapters, serving.proxy, project_id, model, path,
                                payload, stream or collect is not None,
                                partial(_unless_disconnected, request),
                                request_context.request_id.get())
    except SERVING_ERRORS as exc:
        raise _as_api_error(exc, model) from None
    if isinstance(out, Stream):
        if stream:
            return _LeasedStream(out, lease, started, keep)
        try:
            assert collect is not None  # only a request to collect is streamed unasked
            answer = Answer(200, await _unless_disconnected(request, collect(out.chunks)))
        finally:
            lease.release()
            await out.aclose()
    else:
        lease.release()
        answer = out
    _count_usage(answer, lease.engine.base, started)
    body = answer.body
    if keep is not None and answer.status == 200:
        body = await keep.answer(body)
    return JSONResponse(body, status_code=answer.status)


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Awaits `work`, cancelling it (and so the upstream generation) if the client leaves."""
    task = asyncio.ensure_future(work)
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise APIError(499, "The client closed the request.", code="client_closed")
    return task.result()
