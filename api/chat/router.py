"""`/v1/chat/completions`: the base model or a tenant's adapter, on the shared engine."""

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from api.chat.schemas import ChatCompletionRequest
from api.deps import CurrentProject
from api.errors import APIError
from serving.adapters import AdapterLoadError, AdapterManager, ModelNotFound, ModelNotServed
from serving.engine import EngineUnavailable
from serving.proxy import ChatProxy

router = APIRouter(tags=["chat"])

RETRY_AFTER_SECONDS = "5"


def _unavailable() -> APIError:
    return APIError(503, "The model server is starting or restarting; try again shortly.",
                    type="server_error", code="engine_unavailable",
                    headers={"retry-after": RETRY_AFTER_SECONDS})


def _serving(request: Request) -> tuple[AdapterManager, ChatProxy]:
    adapters = getattr(request.app.state, "adapters", None)
    if adapters is None:
        raise APIError(503, "Serving is turned off on this server.", type="server_error",
                       code="serving_disabled")
    return adapters, request.app.state.proxy


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, project: CurrentProject
) -> Response:
    adapters, proxy = _serving(request)
    try:
        route = await adapters.route(project.id, body.model)
    except EngineUnavailable:
        raise _unavailable() from None
    except ModelNotFound:
        raise APIError(404, f"The model '{body.model}' does not exist or you do not have "
                       "access to it.", param="model", code="model_not_found") from None
    except ModelNotServed:
        raise APIError(400, f"The model '{body.model}' is not served by this server.",
                       param="model", code="model_not_served") from None
    except AdapterLoadError as exc:
        raise APIError(500, f"The model '{body.model}' could not be loaded: {exc}",
                       type="server_error", code="model_load_failed") from None
    # Forward what the client sent, not our re-serialization of it.
    payload: dict[str, Any] = await request.json()
    try:
        if body.stream:
            status, chunks = await proxy.stream(payload, route)
            if status != 200:
                return Response(b"".join([c async for c in chunks]), status_code=status,
                                media_type="application/json")
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        answer = await _unless_disconnected(request, proxy.complete(payload, route))
    except EngineUnavailable:
        raise _unavailable() from None
    return JSONResponse(answer.body, status_code=answer.status)


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
