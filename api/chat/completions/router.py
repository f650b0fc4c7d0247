"""`/v1/chat/completions`: the base model or a tenant's adapter, on the replica that has it."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.chat.completions.schemas import FORWARDED_FIELDS, ChatCompletionRequest
from api.deps import AppServices, CurrentProject
from api.errors import error_responses
from api.inference import check_token_budget, forward
from api.quotas import estimate_tokens, rate_limited
from api.tool_calls import chat_request

router = APIRouter(tags=["chat"], responses=error_responses(404, 429, 504))


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 project: CurrentProject, services: AppServices) -> Response:
    settings = services.settings
    max_tokens = body.max_completion_tokens or body.max_tokens
    check_token_budget(body.n, max_tokens, settings.max_model_len, settings.max_request_tokens)
    # Forward what the client sent, not our re-serialization of it.
    sent: dict[str, Any] = await request.json()
    tokens = estimate_tokens(sent.get("messages"), body.n, max_tokens)
    payload, collect = chat_request({k: v for k, v in sent.items() if k in FORWARDED_FIELDS})
    return await rate_limited(settings, services.db, project.id, tokens, lambda: forward(
        request, services.serving, project.id, body.model, "/v1/chat/completions", payload,
        bool(body.stream), collect))
