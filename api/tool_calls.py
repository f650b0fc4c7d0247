"""Tool calls as OpenAI documents them, for chat completions and responses alike.

A forced `tool_choice` (`required`, or a named function) is always answered with a call. vLLM
already constrains such an answer to its tool parser's call format (a structural tag built from
the tools), but it pins a function's arguments to its JSON schema only when the function is
`strict`: otherwise the arguments are any JSON, which a small model fills with the schema
itself or with nested objects until `max_tokens`. So every function of a forced request goes
on as `strict`, with its schema (an empty object where it has none).

A forced answer that is not streamed to the client is generated streamed all the same, and put
together here from the stream: vLLM's streaming parser hands over a call cut off by
`max_tokens` as the partial call it is, where its whole-answer parser fails on it and answers
the raw call markup as text. Streamed or not, the client gets the same call.

`strict: true` is checked as OpenAI checks it (every object closed with `additionalProperties:
false`, every property required) and then enforced by vLLM whatever the choice. `auto` and
`none` go on as sent."""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from api.errors import APIError
from api.inference import Collector, unavailable

log = logging.getLogger("tuneserve.tool_calls")

# What a function without `parameters` takes, as OpenAI reads it: nothing.
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


def forces_a_call(tool_choice: object) -> bool:
    """`required`, or a named function (`{"type": "function", ...}` in both APIs)."""
    return tool_choice == "required" or (isinstance(tool_choice, dict)
                                         and tool_choice.get("type") == "function")


def _function(tool: object, responses: bool) -> dict[str, Any] | None:
    """The function a tool declares (name, parameters, strict), or None for another kind of
    tool. Chat nests it under `function`; the Responses API puts it on the tool itself."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return None
    function = tool if responses else tool.get("function")
    return function if isinstance(function, dict) else None


def _pinned(tool: Any, responses: bool) -> Any:
    function = _function(tool, responses)
    if function is None:
        return tool
    parameters = function.get("parameters")
    pinned = {**function, "strict": True,
              "parameters": NO_PARAMETERS if parameters is None else parameters}
    return pinned if responses else {**tool, "function": pinned}


# Keys on the path to a sub-schema (two per level of nesting) walked at most.
MAX_SCHEMA_DEPTH = 100


def _object_rule_broken(schema: object, context: tuple[str, ...]) -> str | None:
    """The first of OpenAI's strict-mode rules that `schema` breaks, in its words."""
    if not isinstance(schema, dict):
        return None
    if len(context) > MAX_SCHEMA_DEPTH:
        # A tenant's schema nested near the parser's own limit would otherwise exhaust the
        # stack here (a 500); OpenAI's strict mode allows 10 levels.
        return (f"In context={context[:4]}..., the schema is nested more than "
                f"{MAX_SCHEMA_DEPTH} deep.")
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return (f"In context={context}, 'additionalProperties' is required to be supplied "
                    "and to be false.")
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        properties = schema.get("properties")
        for name in properties if isinstance(properties, dict) else ():
            if name not in required:
                return (f"In context={context}, 'required' is required to be supplied and to "
                        f"be an array including every key in properties. Missing '{name}'.")
    for key in ("properties", "$defs", "definitions"):
        named = schema.get(key)
        for name, sub in named.items() if isinstance(named, dict) else ():
            if broken := _object_rule_broken(sub, (*context, key, name)):
                return broken
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        listed = schema.get(key)
        for i, sub in enumerate(listed if isinstance(listed, list) else ()):
            if broken := _object_rule_broken(sub, (*context, key, str(i))):
                return broken
    return _object_rule_broken(schema.get("items"), (*context, "items"))


def check_strict_functions(tools: list[Any] | None, responses: bool) -> None:
    """A 400 naming the first `strict: true` function whose schema strict mode cannot take."""
    for i, tool in enumerate(tools or ()):
        function = _function(tool, responses)
        if function is None or function.get("strict") is not True:
            continue
        parameters = function.get("parameters")
        broken = _object_rule_broken(NO_PARAMETERS if parameters is None else parameters, ())
        if broken:
            param = f"tools[{i}].parameters" if responses else f"tools[{i}].function.parameters"
            raise APIError(400, f"Invalid schema for function '{function.get('name')}': "
                           f"{broken}", param=param, code="invalid_function_parameters")


def _prepared(payload: dict[str, Any], responses: bool, collect: Collector,
              stream_fields: dict[str, Any]) -> tuple[dict[str, Any], Collector | None]:
    check_strict_functions(payload.get("tools"), responses)
    tools = payload.get("tools")
    if not tools or not forces_a_call(payload.get("tool_choice")):
        return payload, None
    payload = {**payload, "tools": [_pinned(tool, responses) for tool in tools]}
    if payload.get("stream"):
        return payload, None
    return {**payload, **stream_fields}, collect


def chat_request(payload: dict[str, Any]) -> tuple[dict[str, Any], Collector | None]:
    """What goes to the engine for a chat completion, and, for a forced choice the client
    does not stream, the collector that puts the answer together from the engine's stream."""
    return _prepared(payload, False, chat_completion_from_stream,
                     {"stream": True, "stream_options": {"include_usage": True}})


def responses_request(payload: dict[str, Any]) -> tuple[dict[str, Any], Collector | None]:
    """As `chat_request`, for the Responses API."""
    return _prepared(payload, True, response_from_stream, {"stream": True})


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON `data:` payloads of an SSE byte stream, up to `[DONE]`."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *events, pending = pending.split(b"\n\n")
        for event in events:
            for line in event.splitlines():
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: "):]
                if data == b"[DONE]":
                    return
                yield json.loads(data)


def _stream_error(error: object) -> APIError:
    """An error event in the engine's stream, as the error the non-streamed request gets."""
    code = error.get("code") if isinstance(error, dict) else None
    if code == "engine_unavailable":
        return unavailable()
    if code == "engine_timeout":
        return APIError(504, "The model server did not answer in time; try a smaller "
                        "max_tokens, or streaming.", type="server_error", code="engine_timeout")
    log.warning("the engine's stream ended with an error: %s", str(error)[:2000])
    return APIError(500, "The model server could not complete the request.",
                    type="server_error", code="engine_error")


def _broken_off() -> APIError:
    return APIError(500, "The model server's answer ended before it was complete.",
                    type="server_error", code="engine_error")


class _Choice:
    """One choice of a chat completion, from its deltas."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.texts: dict[str, str] = {}  # content, refusal, reasoning: each concatenated
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        for key, value in delta.items():
            if isinstance(value, str) and key != "role":
                self.texts[key] = self.texts.get(key, "") + value
        for part in delta.get("tool_calls") or ():
            call = self.calls.setdefault(part.get("index", len(self.calls)), {
                "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = part.get("id") or call["id"]
            function = part.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            self.logprobs = [*(self.logprobs or ()), *(logprobs.get("content") or ())]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def answer(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        message.update({key: text for key, text in self.texts.items() if text})
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {"index": self.index, "message": message,
                "logprobs": None if self.logprobs is None else {"content": self.logprobs},
                "finish_reason": self.finish_reason}


async def chat_completion_from_stream(chunks: AsyncIterator[bytes]) -> dict[str, Any]:
    """The chat completion the engine's chunks make up, as its non-streamed answer has it."""
    head: dict[str, Any] | None = None
    choices: dict[int, _Choice] = {}
    tail: dict[str, Any] = {}
    async for event in _events(chunks):
        if "error" in event:
            raise _stream_error(event["error"])
        head = head or event
        for choice in event.get("choices") or ():
            index = choice.get("index", 0)
            choices.setdefault(index, _Choice(index)).add(choice)
        for key in ("usage", "system_fingerprint"):
            if event.get(key) is not None:
                tail[key] = event[key]
    if head is None or any(c.finish_reason is None for c in choices.values()):
        raise _broken_off()
    return {"id": head["id"], "object": "chat.completion", "created": head["created"],
            "model": head["model"], "choices": [choices[i].answer() for i in sorted(choices)],
            **tail}


# The events that end a response's stream, each carrying the whole response.
_RESPONSE_ENDS = {"response.completed", "response.incomplete", "response.failed"}


async def response_from_stream(chunks: AsyncIterator[bytes]) -> dict[str, Any]:
    """The response the engine's events end with (each end event carries it whole)."""
    async for event in _events(chunks):
        if event.get("type") == "error" or ("error" in event and "type" not in event):
            raise _stream_error(event.get("error", event))
        if event.get("type") in _RESPONSE_ENDS:
            response: dict[str, Any] = event["response"]
            return response
    raise _broken_off()
