"""The (legacy) completions request: OpenAI's fields only, as for chat."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.chat.completions.schemas import StreamOptions


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    prompt: str | Annotated[list[str], Field(min_length=1)] | Annotated[
        list[int], Field(min_length=1)] | Annotated[list[list[int]], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = None
    user: str | None = None
    # OpenAI's, but the engine has neither: only their no-op values are accepted.
    best_of: Literal[1] | None = None
    suffix: None = None


FORWARDED_FIELDS = frozenset(CompletionRequest.model_fields) - {"best_of", "suffix"}
