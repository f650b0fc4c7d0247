"""The Responses API request: OpenAI's fields only, as for chat. Responses are not stored:
a replica keeps them in its own memory only, so a later request on another replica could not
find them; `previous_response_id` and `background` are refused with a 400 naming them."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.chat.completions.schemas import MAX_TOOLS


class ResponseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    stream: bool | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    text: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    user: str | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    # OpenAI's, about its own storage and billing: accepted and not sent on.
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Stateful features this server does not offer: only their off values are accepted.
    previous_response_id: None = None
    background: Literal[False] | None = None


FORWARDED_FIELDS = frozenset(ResponseRequest.model_fields) - {
    "store", "service_tier", "prompt_cache_key", "safety_identifier", "previous_response_id",
    "background"}
