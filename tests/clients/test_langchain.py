"""LangChain's `ChatOpenAI` (langchain-openai) pointed at tuneserve, as its users write it:
invoke, batch, stream, tools bound with a required call, structured output both ways, and the
Responses API."""

from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.support.server import TuneserveServer
from tests.support.training import BASE


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="the city's name")
    temperature_celsius: int


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny, 21 C in {city}."


def _llm(server: TuneserveServer, max_tokens: int = 16, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(model=BASE, base_url=server.base_url, api_key=server.api_key,
                      max_retries=0, timeout=120, temperature=0, max_tokens=max_tokens, **kw)


def test_invoke_and_batch(chat_server: TuneserveServer) -> None:
    llm = _llm(chat_server)
    answer = llm.invoke("Say hello.")
    assert isinstance(answer, AIMessage) and answer.text
    assert answer.response_metadata["model_name"] == BASE
    assert answer.usage_metadata and 0 < answer.usage_metadata["output_tokens"] <= 16
    batch = llm.batch(["Say hello.", "Name a colour."])
    assert len(batch) == 2 and all(a.text for a in batch)


def test_stream_with_usage(chat_server: TuneserveServer) -> None:
    chunks = list(_llm(chat_server, stream_usage=True).stream("Count to five."))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = sum(chunks[1:], chunks[0])
    assert whole.text
    assert whole.usage_metadata and 0 < whole.usage_metadata["output_tokens"] <= 16


def test_bind_tools_with_a_required_call(chat_server: TuneserveServer) -> None:
    llm = _llm(chat_server, max_tokens=48).bind_tools([get_weather], tool_choice="required")
    answer = llm.invoke("What is the weather in Paris?")
    assert not answer.invalid_tool_calls, answer.invalid_tool_calls
    assert [c["name"] for c in answer.tool_calls] == ["get_weather"], answer
    call = answer.tool_calls[0]
    assert call["id"] and isinstance(call["args"]["city"], str), call
    # The tool runs on what the model sent, as an agent loop would run it.
    assert get_weather.invoke(call).content.startswith("Sunny")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output(chat_server: TuneserveServer,
                           method: Literal["json_schema", "function_calling"]) -> None:
    structured = _llm(chat_server, max_tokens=48).with_structured_output(Weather, method=method)
    weather = structured.invoke("It is 18 degrees in Lyon. Give the weather in Lyon.")
    assert isinstance(weather, Weather), weather


def test_responses_api(chat_server: TuneserveServer) -> None:
    llm = _llm(chat_server, use_responses_api=True)
    answer = llm.invoke("Say hello.")
    assert answer.text and answer.id and answer.id.startswith("resp")
    assert answer.usage_metadata and 0 < answer.usage_metadata["output_tokens"] <= 16
    chunks = list(llm.stream("Say hello."))
    assert "".join(c.text for c in chunks) == answer.text
