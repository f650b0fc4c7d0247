"""Forced tool choices (`required`, a named function) on the untrained base, as LangChain and
the Agents SDK send them: always a call, whose arguments fit the tool's schema, at
temperature 1 whatever the seed, streamed or not; a call cut off by `max_tokens` is the
partial call, never text. Through the official openai client."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import jsonschema
import openai
import pytest

from api.errors import APIError
from api.tool_calls import (
    chat_completion_from_stream,
    check_strict_functions,
    response_from_stream,
)
from tests.support.chat import engine_http
from tests.support.server import TuneserveServer
from tests.support.training import BASE, WEATHER_TOOL

# As LangChain's `bind_tools` sends a function: no `strict`, an open schema.
WEATHER = WEATHER_TOOL
# As the Agents SDK sends one: `strict`, a closed schema.
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
# The same functions as the Responses API takes them.
RESPONSE_TOOLS = [{"type": "function", **t["function"]} for t in (WEATHER, TIME)]
QUESTION = [{"role": "user", "content": "What is the weather in Nice?"}]
SEEDS = range(5)
# A call of either tool takes about 35 tokens; this leaves room for two.
ROOM = 90
# The call's envelope (`<tool_call>`, the name, `"arguments": `) takes 17 to 21 tokens, as the
# model splits it: this cuts the call in its arguments.
CUT = 24

T = TypeVar("T")
Call = tuple[str, str]  # name, arguments
Answer = tuple[str, list[Call], str | None]  # content, calls, finish_reason


@pytest.fixture(scope="module")
def client(chat_server: TuneserveServer) -> openai.OpenAI:
    return chat_server.client()


def _at_once(asks: list[Callable[[], T]]) -> list[T]:
    """The requests sent all at once: the engine generates them as one batch, about as fast as
    one of them alone on the CPU."""
    with ThreadPoolExecutor(len(asks)) as pool:
        return [future.result() for future in [pool.submit(ask) for ask in asks]]


def _chat(client: openai.OpenAI, stream: bool, **kw: Any) -> Answer:
    """The answer's text, calls and finish reason, read from the stream or the whole answer."""
    kw = {"model": BASE, "messages": QUESTION, "tools": [WEATHER, TIME], **kw}
    if not stream:
        choice = client.chat.completions.create(**kw).choices[0]
        return (choice.message.content or "", [(c.function.name, c.function.arguments)
                                               for c in choice.message.tool_calls or []],
                choice.finish_reason)
    content, calls, finish = "", dict[int, list[str]](), None
    for chunk in client.chat.completions.create(stream=True, **kw):
        for delta_choice in chunk.choices:
            content += delta_choice.delta.content or ""
            for part in delta_choice.delta.tool_calls or []:
                call = calls.setdefault(part.index, ["", ""])
                if part.function:
                    call[0] += part.function.name or ""
                    call[1] += part.function.arguments or ""
            finish = delta_choice.finish_reason or finish
    return content, [(name, args) for name, args in (calls[i] for i in sorted(calls))], finish


def _fits(call: Call) -> None:
    name, arguments = call
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def test_a_forced_choice_always_calls_with_arguments_that_fit(client: openai.OpenAI) -> None:
    """`required` and a named function, whole and streamed, five seeds each."""
    cases = [(choice, stream, seed) for choice in ("required", NAMED) for stream in (False, True)
             for seed in SEEDS]
    answers = _at_once([partial(_chat, client, stream, tool_choice=choice, seed=seed,
                                temperature=1, max_tokens=ROOM)
                        for choice, stream, seed in cases])
    for (choice, stream, seed), (content, calls, finish) in zip(cases, answers, strict=True):
        case = (choice, stream, seed, content, calls, finish)
        assert not content and calls, case
        for call in calls:
            _fits(call)
        if choice == NAMED:
            # OpenAI's finish reason for a named function is `stop`.
            assert [name for name, _ in calls] == ["get_weather"] and finish == "stop", case
        else:
            assert finish == "tool_calls", case


def test_a_call_cut_off_by_max_tokens_is_the_partial_call(client: openai.OpenAI) -> None:
    answers = _at_once([partial(_chat, client, stream, tool_choice=NAMED, seed=2,
                                temperature=1, max_completion_tokens=CUT)
                        for stream in (False, True)])
    for content, calls, finish in answers:
        assert finish == "length" and not content, answers
        ((name, arguments),) = calls
        assert name == "get_weather" and arguments.startswith("{"), answers


def test_parallel_tool_calls_false_makes_one_call(client: openai.OpenAI) -> None:
    two_cities = [{"role": "user",
                   "content": "What are the weather and the time in Nice and in Oslo?"}]
    answers = _at_once([partial(_chat, client, False, tool_choice="required",
                                parallel_tool_calls=False, seed=seed, temperature=1,
                                max_tokens=ROOM, messages=two_cities) for seed in SEEDS])
    for content, calls, finish in answers:
        assert not content and len(calls) == 1 and finish == "tool_calls", answers
        _fits(calls[0])


def test_auto_is_answered_as_the_engine_answers_it(client: openai.OpenAI,
                                                   chat_server: TuneserveServer) -> None:
    """`auto` goes on as sent: the answer is the engine's own for the same request."""
    request = {"model": BASE, "messages": QUESTION, "tools": [WEATHER], "tool_choice": "auto",
               "temperature": 0, "max_tokens": 16}
    ours = client.chat.completions.create(**request).choices[0]
    with engine_http(chat_server) as engine:
        theirs = engine.post("/v1/chat/completions", json=request).json()["choices"][0]
    assert ours.message.content == theirs["message"]["content"]
    assert [(c.function.name, c.function.arguments) for c in ours.message.tool_calls or []] == [
        (c["function"]["name"], c["function"]["arguments"])
        for c in theirs["message"].get("tool_calls") or []]
    assert ours.finish_reason == theirs["finish_reason"]


def _response_calls(response: Any) -> list[Call]:
    assert all(item.type == "function_call" for item in response.output), response.output
    return [(item.name, item.arguments) for item in response.output]


def _forced_response(response: Any) -> bool:
    """A forced response is calls and nothing else: whole calls that fit when it completed,
    the partial call when `max_output_tokens` cut it off. True when it completed."""
    calls = _response_calls(response)
    assert calls, response
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens", response
        assert calls[-1][1].startswith("{"), response
        return False
    assert response.status == "completed", response
    for call in calls:
        _fits(call)
    return True


def test_a_forced_responses_tool_is_a_function_call_that_fits(client: openai.OpenAI) -> None:
    """The Responses API takes no seed: five samples at temperature 1 with `required`, and a
    named function streamed and cut off. Unseeded, an argument string now and then runs on
    past any `max_output_tokens` (CI once met one past 90 tokens; here 33 to 49 tokens in 40
    samples), so a sample may be cut off: then it is the partial call, never text."""
    ask = partial(client.responses.create, model=BASE, input=QUESTION[0]["content"],
                  tools=RESPONSE_TOOLS, temperature=1)
    named = {"type": "function", "name": "get_weather"}
    *responses, streamed, cut = _at_once([
        *[partial(ask, tool_choice="required", max_output_tokens=ROOM) for _ in SEEDS],
        lambda: list(ask(tool_choice=named, max_output_tokens=ROOM, stream=True)),
        partial(ask, tool_choice=named, max_output_tokens=CUT)])
    assert streamed[-1].type in ("response.completed", "response.incomplete")
    completed = [_forced_response(r) for r in [*responses, streamed[-1].response]]
    # A sample is rarely cut off: all six cut off means calls that do not close.
    assert any(completed), responses
    ((name, _),) = _response_calls(streamed[-1].response)
    assert name == "get_weather"
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    ((name, arguments),) = _response_calls(cut)
    assert name == "get_weather" and arguments.startswith("{")


def test_a_strict_function_needs_a_schema_strict_mode_takes(client: openai.OpenAI) -> None:
    """As OpenAI checks it, before anything is generated: every object closed, every
    property required."""
    open_schema = {**WEATHER["function"], "strict": True}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=BASE, messages=QUESTION, tools=[
            TIME, {"type": "function", "function": open_schema}])
    assert info.value.body["param"] == "tools[1].function.parameters"
    assert info.value.body["code"] == "invalid_function_parameters"
    optional = {**TIME["function"], "parameters": {
        **SCHEMAS["get_time"], "properties": {"city": {"type": "string"},
                                              "zone": {"type": "string"}}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=BASE, input="hi",
                                tools=[{"type": "function", **optional}])
    assert info.value.body["param"] == "tools[0].parameters"
    assert "Missing 'zone'" in info.value.body["message"]


def test_a_strict_schema_nested_too_deep_is_a_400_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(900):  # as deep as a JSON body parses, past what a recursive walk survives
        schema = {"type": "array", "items": schema}
    tool = {"type": "function", "function": {"name": "deep", "strict": True,
                                             "parameters": schema}}
    with pytest.raises(APIError) as info:
        check_strict_functions([tool], responses=False)
    assert info.value.status == 400 and info.value.param == "tools[0].function.parameters"
    assert "nested more than" in info.value.message


def test_a_collected_answer_that_breaks_off_is_an_error() -> None:
    """A forced answer the client does not stream is collected from the engine's stream: one
    the engine's replica ended with an error event (it died under it) answers that error, and
    one that ends early a 500, never a 200 with the part that came."""
    start = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
             b'"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
             b'\n\n')
    lost = b'data: {"error": {"message": "gone", "code": "engine_unavailable"}}\n\n'

    async def collected(collect: Any, *chunks: bytes) -> int:
        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
        try:
            await collect(stream())
        except APIError as err:
            return err.status
        return 200

    async def statuses() -> list[int]:
        return [await collected(chat_completion_from_stream, start[:50], start[50:], lost),
                await collected(chat_completion_from_stream, start, b"data: [DONE]\n\n"),
                await collected(response_from_stream, b'event: response.created\ndata: '
                                b'{"type":"response.created","response":{}}\n\n')]

    assert asyncio.run(statuses()) == [503, 500, 500]
