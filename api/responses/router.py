"""`/v1/responses`: the Responses API on the base model or a tenant's adapter."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import AppServices, CurrentProject
from api.errors import error_responses
from api.inference import check_token_budget, forward
from api.quotas import estimate_tokens, rate_limited
from api.responses.schemas import FORWARDED_FIELDS, ResponseRequest
from api.tool_calls import responses_request

router = APIRouter(tags=["responses"], responses=error_responses(404, 429, 504))


@router.post("/responses", response_model=None)
async def create_response(body: ResponseRequest, request: Request, project: CurrentProject,
                          services: AppServices) -> Response:
    settings = services.settings
    check_token_budget(1, body.max_output_tokens, settings.max_model_len,
                       settings.max_request_tokens, tokens_param="max_output_tokens")
    sent: dict[str, Any] = await request.json()
    tokens = estimate_tokens(sent.get("input"), 1, body.max_output_tokens)
    # Nothing is kept on the replica (see the schemas).
    payload, collect = responses_request(
        {k: v for k, v in sent.items() if k in FORWARDED_FIELDS} | {"store": False})
    return await rate_limited(settings, services.db, project.id, tokens, lambda: forward(
        request, services.serving, project.id, body.model, "/v1/responses", payload,
        bool(body.stream), collect))
