"""The OpenAI Agents SDK (openai-agents) on tuneserve: an agent with a function tool through the
chat completions model and the responses model, and a streamed run. Its tracing is off: it
would export to OpenAI."""

import asyncio
from collections.abc import Iterator

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from agents.models.interface import Model
from openai import AsyncOpenAI

from tests.support.server import TuneserveServer
from tests.support.training import BASE

set_tracing_disabled(True)

# The cities the weather tool was asked about, in order.
asked: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    asked.append(city)
    return f"Sunny, 21 C in {city}."


@pytest.fixture(autouse=True)
def no_calls_yet() -> Iterator[None]:
    asked.clear()
    yield


def _client(server: TuneserveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                       timeout=120)


def _model(server: TuneserveServer, kind: str) -> Model:
    if kind == "chat":
        return OpenAIChatCompletionsModel(model=BASE, openai_client=_client(server))
    return OpenAIResponsesModel(model=BASE, openai_client=_client(server))


def _agent(model: Model) -> Agent:
    # The first turn must call the tool; the SDK then resets the choice to `auto` and sends
    # the tool's output back for the answer. 48 tokens: a Hermes call of this tool takes ~36.
    return Agent(name="weather", instructions="Answer with the get_weather tool.",
                 tools=[get_weather], model=model,
                 model_settings=ModelSettings(tool_choice="required", temperature=0,
                                              max_tokens=48))


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_agent_calls_its_function_tool(chat_server: TuneserveServer, kind: str) -> None:
    result = Runner.run_sync(_agent(_model(chat_server, kind)), "What is the weather in Paris?",
                             max_turns=3)
    assert len(asked) == 1 and asked[0], asked
    kinds = [type(item) for item in result.new_items]
    assert kinds == [ToolCallItem, ToolCallOutputItem, MessageOutputItem], result.new_items
    assert result.new_items[1].output == f"Sunny, 21 C in {asked[0]}."
    assert isinstance(result.final_output, str) and result.final_output


def test_streamed_run(chat_server: TuneserveServer) -> None:
    async def run() -> tuple[list[str], list[str], object]:
        streamed = Runner.run_streamed(_agent(_model(chat_server, "chat")),
                                       "What is the weather in Oslo?", max_turns=3)
        raw: list[str] = []
        items: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                raw.append(event.data.type)
            elif event.type == "run_item_stream_event":
                items.append(event.name)
        return raw, items, streamed.final_output

    raw, items, final_output = asyncio.run(run())
    # Two model turns, each streamed to its end.
    assert raw.count("response.completed") == 2 and "response.output_text.delta" in raw, raw
    assert items == ["tool_called", "tool_output", "message_output_created"], items
    assert len(asked) == 1 and asked[0], asked
    assert isinstance(final_output, str) and final_output
