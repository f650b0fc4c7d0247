"""The Responses API request: OpenAI's fields only, as for chat. Responses are stored in
tuneserve's database, not on the replica (a later request may land on another replica): the
replica is always sent `store: false` and, for `previous_response_id`, the stored input and
output items of the chain in front of the new input. What this server does not offer
(`background`, `conversation`, `prompt`, built-in tools: see service.py) is a 400 naming
the field."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.chat.completions.schemas import MAX_TOOLS
from storage.models import StoredResponse, max_chars

# The longest id a stored response has (vLLM's are `resp_` and 32 hex digits).
MAX_RESPONSE_ID_CHARS = max_chars(StoredResponse.id)


def _unsupported(what: str) -> str:
    return f"{what} is not supported by this server."


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
    # Kept by tuneserve (OpenAI's default: true), never by the replica.
    store: bool | None = None
    previous_response_id: Annotated[
        str, Field(min_length=1, max_length=MAX_RESPONSE_ID_CHARS)] | None = None
    # OpenAI's, about its own billing and caching: accepted and not sent on.
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # What this server does not offer: only their off values are accepted.
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None

    @field_validator("background")
    @classmethod
    def _not_in_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(_unsupported("Running a response in the background"))
        return value

    @field_validator("conversation", "prompt")
    @classmethod
    def _not_given(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(_unsupported("This field"))
        return value


FORWARDED_FIELDS = frozenset(ResponseRequest.model_fields) - {
    "store", "service_tier", "prompt_cache_key", "safety_identifier", "previous_response_id",
    "background", "conversation", "prompt"}


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool
