"""`/v1/completions`: text completions from the base model or a tenant's adapter."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.completions.schemas import FORWARDED_FIELDS, CompletionRequest
from api.deps import AppServices, CurrentProject
from api.errors import error_responses
from api.inference import check_token_budget, forward
from api.quotas import estimate_tokens, rate_limited

router = APIRouter(tags=["completions"], responses=error_responses(404, 429, 504))


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request,
                            project: CurrentProject, services: AppServices) -> Response:
    settings = services.settings
    check_token_budget(body.n, body.max_tokens, settings.max_model_len,
                       settings.max_request_tokens)
    sent: dict[str, Any] = await request.json()
    tokens = estimate_tokens(sent.get("prompt"), body.n, body.max_tokens)
    payload = {k: v for k, v in sent.items() if k in FORWARDED_FIELDS}
    return await rate_limited(settings, services.db, project.id, tokens, lambda: forward(
        request, services.serving, project.id, body.model, "/v1/completions", payload,
        bool(body.stream)))
