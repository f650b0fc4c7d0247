"""Training examples in the one shape chat templates render, from any shape OpenAI accepts:
text content parts joined into one string (as vLLM joins them when it serves), optional
fields sent as null left out, and the legacy function-calling format (`functions`,
`function_call`, role `function`) turned into tools, tool calls and tool results. Applied
after validation (training/validation.py), to what is counted and to what is trained."""

import copy
import json
from typing import Any

# Optional message fields that OpenAI's own chat completions write as null.
_NULLABLE = ("name", "tool_calls", "function_call", "tool_call_id", "refusal")


def normalized(record: dict[str, Any]) -> dict[str, Any]:
    """A validated SFT, DPO or reinforcement record in the modern shape (a copy)."""
    record = copy.deepcopy(record)
    if isinstance(record.get("input"), dict):  # DPO: the prompt, then both answers
        _normalize_holder(record["input"])
        for key in ("preferred_output", "non_preferred_output"):
            record[key] = _messages(record.get(key) or [], [])
        return record
    _normalize_holder(record)
    return record


def _normalize_holder(holder: dict[str, Any]) -> None:
    """`holder` has `messages` and maybe `tools` / `functions`."""
    functions = holder.pop("functions", None)
    if functions:
        holder["tools"] = [*(holder.get("tools") or []),
                           *({"type": "function", "function": f} for f in functions)]
    holder["messages"] = _messages(holder.get("messages") or [], [])


def _messages(messages: list[dict[str, Any]], calls: list[str]) -> list[dict[str, Any]]:
    """`calls`: the ids of the legacy function calls so far, for the results that follow."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if not (k in _NULLABLE and v is None)}
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = "\n".join(part["text"] for part in content)
        if message.get("tool_calls"):
            message["tool_calls"] = [_with_text_arguments(call) for call in message["tool_calls"]]
        legacy_call = message.pop("function_call", None)
        if legacy_call is not None:
            calls.append(f"call_{len(calls)}")
            message["tool_calls"] = [_with_text_arguments(
                {"id": calls[-1], "type": "function", "function": legacy_call})]
        if message.get("role") == "function":
            message["role"] = "tool"
            if calls:
                message.setdefault("tool_call_id", calls[-1])
        out.append(message)
    return out


def _with_text_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the JSON text OpenAI's format has (an object is accepted too): the model
    writes them as text, and one type keeps a dataset column of calls uniform."""
    arguments = call["function"].get("arguments")
    if isinstance(arguments, str):
        return call
    return {**call, "function": {**call["function"], "arguments": json.dumps(arguments)}}
