"""`/v1/responses`: the Responses API on the base model or a tenant's adapter, and the
project's stored responses."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from api.deps import DB, AppServices, CurrentProject
from api.errors import APIError, error_responses
from api.inference import check_token_budget, forward
from api.lists import CursorPage
from api.quotas import estimate_tokens, rate_limited
from api.responses import service
from api.responses.schemas import ResponseDeleted, ResponseRequest
from api.tool_calls import responses_request

router = APIRouter(tags=["responses"], responses=error_responses(404, 429, 504))


class ResponseObject(BaseModel):
    """A stored response, as it was answered (OpenAI's `Response`; every field it has)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"]
    created_at: float
    model: str
    status: str | None = None
    output: list[dict[str, Any]]
    previous_response_id: str | None = None
    store: bool | None = None


class ResponseItemList(CursorPage[dict[str, Any]]):
    """A stored response's own input items (not those of the responses it continues)."""


@router.post("/responses", response_model=None)
async def create_response(body: ResponseRequest, request: Request, project: CurrentProject,
                          services: AppServices) -> Response:
    settings = services.settings
    check_token_budget(1, body.max_output_tokens, settings.max_model_len,
                       settings.max_request_tokens, tokens_param="max_output_tokens")
    sent: dict[str, Any] = await request.json()
    forwarded, keeper = await service.prepare(services.db, settings, project.id, body, sent)
    tokens = estimate_tokens(forwarded.get("input"), 1, body.max_output_tokens)
    payload, collect = responses_request(forwarded)
    return await rate_limited(settings, services.db, project.id, tokens, lambda: forward(
        request, services.serving, project.id, body.model, "/v1/responses", payload,
        bool(body.stream), collect, keeper))


@router.get("/responses/{response_id}", response_model=ResponseObject)
def retrieve_response(response_id: str, project: CurrentProject, session: DB,
                      stream: bool = False) -> dict[str, Any]:
    if stream:
        raise APIError(400, "Streaming a stored response again is not supported by this "
                       "server.", param="stream", code="unsupported_value")
    return service.get(session, project.id, response_id).response


@router.delete("/responses/{response_id}", response_model=ResponseDeleted)
def delete_response(response_id: str, project: CurrentProject, session: DB) -> ResponseDeleted:
    service.delete(session, project.id, response_id)
    return ResponseDeleted(id=response_id, deleted=True)


@router.get("/responses/{response_id}/input_items", response_model=ResponseItemList)
def list_input_items(
    response_id: str,
    project: CurrentProject,
    session: DB,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> ResponseItemList:
    row = service.get(session, project.id, response_id)
    items, has_more = service.input_items_page(row, after, limit, order)
    return ResponseItemList(
        data=items,
        first_id=items[0]["id"] if items else None,
        last_id=items[-1]["id"] if items else None,
        has_more=has_more,
    )
