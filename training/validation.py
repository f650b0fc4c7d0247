"""Checks an OpenAI fine-tuning file (JSONL) before any training starts.

Pure stdlib on purpose: the API validates uploads with it, and the API process must not pay
for importing torch or transformers. Tokenizing is the caller's job (`count_tokens`), so the
model's chat template stays out of this module too.

The first problem found stops validation; its message names the 1-based line number, so a
person can open the file and fix it.
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from training.normalize import normalized

Message = dict[str, Any]

__all__ = ["DatasetError", "DatasetStats", "Message", "UnrenderableExample", "parse_line",
           "validate_training_file"]

INVALID_FORMAT = "invalid_file_format"
TOO_LONG = "exceeds_context_length"
TOO_FEW = "invalid_n_examples"

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
SFT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
DPO_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
DPO_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


class DatasetError(Exception):
    """A file that cannot be trained on; becomes the job's `error`."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class DatasetStats:
    n_examples: int
    n_tokens: int  # sum over examples (for DPO: prompt+chosen plus prompt+rejected)
    max_tokens: int  # longest example (for DPO, the longer of its two sequences)


class UnrenderableExample(Exception):
    """`count_tokens` could not render the example with the base model's chat template (as
    training would not either); the message says why."""


class _Problem(Exception):
    """A structural problem inside one record; the caller adds the line number and param."""


def _reject_constant(name: str) -> Any:
    # json accepts NaN and Infinity, but they are not JSON and other readers choke on them.
    raise ValueError(f"{name} is not valid JSON")


def parse_line(line: bytes, number: int, param: str) -> dict[str, Any] | None:
    """Decodes one line: None for a blank line, the JSON object otherwise;
    DatasetError(invalid_file_format) when it is not UTF-8, not JSON, or not a JSON object."""
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            INVALID_FORMAT, f"Line {number}: not valid UTF-8 (byte {exc.start})", param
        ) from None
    if number == 1:
        # Editors on Windows often start a file with a byte order mark; it is not content.
        text = text.removeprefix("\ufeff")
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        message = f"Line {number}: not valid JSON ({exc})"
        raise DatasetError(INVALID_FORMAT, message, param) from None
    except RecursionError:
        raise DatasetError(INVALID_FORMAT, f"Line {number}: the JSON nests too deeply",
                           param) from None
    if "\\u" in text and _has_lone_surrogate(record):
        raise DatasetError(INVALID_FORMAT, f"Line {number}: a \\u escape is half of a "
                           "surrogate pair (no character); the text is not valid Unicode", param)
    if not isinstance(record, dict):
        raise DatasetError(
            INVALID_FORMAT,
            f"Line {number}: expected a JSON object, got {_json_type(record)}",
            param,
        )
    return record


def _has_lone_surrogate(record: Any) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_training_file(
    lines: Iterable[bytes],
    *,
    method: Literal["supervised", "dpo", "reinforcement"],
    count_tokens: Callable[[list[Message], list[Any] | None], int],
    context_length: int,
    param: str = "training_file",
    min_examples: int = 10,
    max_seq_length: int | None = None,
) -> DatasetStats:
    """Validates every line and returns the file's size in examples and tokens.

    `max_seq_length` is the job's own limit when it set one: training never truncates, so a
    longer example fails here. Raises DatasetError at the first problem; `param` goes into
    every error."""
    sequences_of = {"supervised": _sft_sequences, "dpo": _dpo_sequences,
                    "reinforcement": _rft_sequences}.get(method)
    if sequences_of is None:
        raise ValueError(f"unknown fine-tuning method {method!r}")
    n_examples = n_tokens = max_tokens = 0
    # Numbered before skipping blanks, so numbers match what an editor shows.
    for number, line in enumerate(lines, start=1):
        record = parse_line(line, number, param)
        if record is None:
            continue
        try:
            sequences_of(record)
        except _Problem as problem:
            raise DatasetError(INVALID_FORMAT, f"Line {number}: {problem}", param) from None
        # Counted as it is trained: in the modern shape, the tools rendered into the prompt
        # (the system turn) too.
        record = normalized(record)
        tools = (record.get("input") or {} if method == "dpo" else record).get("tools")
        for sequence in sequences_of(record):
            try:
                tokens = count_tokens(sequence, tools if isinstance(tools, list) else None)
            except UnrenderableExample as exc:
                raise DatasetError(INVALID_FORMAT, f"Line {number}: the base model's chat "
                                   f"template cannot render this example ({exc})",
                                   param) from None
            if tokens > context_length:
                raise DatasetError(
                    TOO_LONG,
                    f"Line {number}: the example has {tokens} tokens, more than the base "
                    f"model's context length of {context_length}",
                    param,
                )
            if max_seq_length is not None and tokens > max_seq_length:
                raise DatasetError(
                    TOO_LONG,
                    f"Line {number}: the example has {tokens} tokens, more than the job's "
                    f"max_seq_length of {max_seq_length}; raise max_seq_length (up to "
                    f"{context_length}) or shorten the example",
                    param,
                )
            n_tokens += tokens
            max_tokens = max(max_tokens, tokens)
        n_examples += 1
    if n_examples < min_examples:
        raise DatasetError(TOO_FEW, _too_few_message(n_examples, min_examples, param), param)
    return DatasetStats(n_examples=n_examples, n_tokens=n_tokens, max_tokens=max_tokens)


def _too_few_message(n_examples: int, min_examples: int, param: str) -> str:
    kind = "Validation file" if param == "validation_file" else "Training file"
    return f"{kind} has {n_examples} example(s), but must have at least {min_examples} examples"


# --- supervised -----------------------------------------------------------------------------


def _sft_sequences(record: dict[str, Any]) -> list[list[Message]]:
    """The one conversation a supervised example trains on, after checking its shape."""
    _check_keys(record, SFT_KEYS, "top-level key")
    messages = _message_list(record, "messages", "messages")
    _check_tools(record)
    if "functions" in record and not isinstance(record["functions"], list):
        raise _Problem("'functions' must be a list")
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]", allow_weight=True)
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise _Problem("missing assistant message: each example needs at least one")
    # weight 0 masks a message out of the loss; with every one masked there is nothing to learn.
    if all(m.get("weight", 1) == 0 for m in assistants):
        raise _Problem("every assistant message has weight 0, so there is nothing to train on")
    return [messages]


# --- reinforcement --------------------------------------------------------------------------


def _rft_sequences(record: dict[str, Any]) -> list[list[Message]]:
    """The prompt a reinforcement example samples answers to. Every other top-level field is
    the grader's `item` (a reference answer, labels…), free in shape."""
    messages = _message_list(record, "messages", "messages")
    _check_tools(record)
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]", allow_weight=False)
    if messages[-1]["role"] != "user":
        raise _Problem(f"messages[{len(messages) - 1}] has role '{messages[-1]['role']}'; "
                       "the last message must be the user's (the model answers it)")
    return [messages]


# --- DPO ------------------------------------------------------------------------------------


def _dpo_sequences(record: dict[str, Any]) -> list[list[Message]]:
    """Prompt+preferred and prompt+non-preferred, the two sequences DPO compares."""
    _check_keys(record, DPO_KEYS, "top-level key")
    for key in sorted(DPO_KEYS):
        if key not in record:
            raise _Problem(f"missing required key '{key}'")
    prompt = record["input"]
    if not isinstance(prompt, dict):
        raise _Problem(f"'input' must be an object, got {_json_type(prompt)}")
    _check_keys(prompt, DPO_INPUT_KEYS, "key in 'input'")
    messages = _message_list(prompt, "messages", "input.messages")
    _check_tools(prompt)
    # The prompt may end anywhere; the completions below are what is compared.
    for index, message in enumerate(messages):
        _check_message(message, f"input.messages[{index}]", allow_weight=False)
    preferred = _dpo_output(record, "preferred_output")
    rejected = _dpo_output(record, "non_preferred_output")
    return [messages + preferred, messages + rejected]


def _dpo_output(record: dict[str, Any], key: str) -> list[Message]:
    output = _message_list(record, key, key)
    for index, message in enumerate(output):
        where = f"{key}[{index}]"
        _check_message(message, where, allow_weight=False)
        if message["role"] != "assistant":
            raise _Problem(f"{where} has role '{message['role']}'; it must be 'assistant'")
        if not isinstance(message.get("content"), str):
            raise _Problem(f"{where} must have string 'content'")
    return output


# --- shared pieces --------------------------------------------------------------------------


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        raise _Problem(f"unknown {what} '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _message_list(obj: dict[str, Any], key: str, where: str) -> list[Message]:
    if key not in obj:
        raise _Problem(f"missing required key '{where}'")
    value = obj[key]
    if not isinstance(value, list) or not value:
        raise _Problem(f"'{where}' must be a non-empty list of messages")
    return value


def _check_tools(obj: dict[str, Any]) -> None:
    if "tools" in obj and not isinstance(obj["tools"], list):
        raise _Problem("'tools' must be a list")
    if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
        raise _Problem("'parallel_tool_calls' must be true or false")


def _check_message(message: Any, where: str, *, allow_weight: bool) -> None:
    if not isinstance(message, dict):
        raise _Problem(f"{where} must be an object, got {_json_type(message)}")
    unknown = [key for key in message if key not in MESSAGE_KEYS]
    if unknown:
        raise _Problem(f"{where} has unknown key '{unknown[0]}'")
    if "role" not in message:
        raise _Problem(f"{where} is missing 'role'")
    role = message["role"]
    if not isinstance(role, str) or role not in ROLES:
        raise _Problem(f"{where} has unknown role {role!r} (allowed: {', '.join(sorted(ROLES))})")
    _check_content(message, where)
    _check_optional_fields(message, where)
    if "weight" in message:
        _check_weight(message, where, allow_weight=allow_weight)


def _check_content(message: Message, where: str) -> None:
    content = message.get("content")
    # A tool-calling turn carries its payload in the call, so its text may be absent.
    calls = message["role"] == "assistant" and (
        message.get("tool_calls") is not None or message.get("function_call") is not None
    )
    if content is None:
        if calls:
            return
        raise _Problem(f"{where} ({message['role']}) is missing 'content'")
    if isinstance(content, str):
        return
    if isinstance(content, list) and content:
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _Problem(f"{where} content part {index} must be an object with a 'type'")
            if part["type"] != "text":
                raise _Problem(f"{where} content part {index} has type '{part['type']}'; the "
                               "models trained here read text parts only")
            if not isinstance(part.get("text"), str):
                raise _Problem(f"{where} content part {index} must have string 'text'")
        return
    raise _Problem(
        f"{where} 'content' must be a string or a non-empty list of content parts, "
        f"got {_json_type(content)}"
    )


def _check_optional_fields(message: Message, where: str) -> None:
    expected: dict[str, tuple[type, ...]] = {
        "name": (str,),
        "tool_calls": (list,),
        "tool_call_id": (str,),
        "function_call": (dict,),
        "refusal": (str, type(None)),
    }
    for key, types in expected.items():
        # null is absent, as OpenAI's own chat completions write these fields.
        if message.get(key) is not None and not isinstance(message[key], types):
            raise _Problem(f"{where} '{key}' has the wrong type ({_json_type(message[key])})")
    if message["role"] != "assistant":
        for key in ("tool_calls", "function_call"):
            if message.get(key) is not None:
                raise _Problem(f"{where} has '{key}', which only assistant messages may have")
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        _check_function(function, f"{where} tool_calls[{index}].function")
    if message.get("function_call") is not None:
        _check_function(message["function_call"], f"{where} function_call")


def _check_function(function: Any, where: str) -> None:
    """A call's `{"name", "arguments"}`: what the chat template writes out."""
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _Problem(f"{where} must be an object with a string 'name'")
    if not isinstance(function.get("arguments"), str | dict):
        raise _Problem(f"{where} must have 'arguments' (a JSON string)")


def _check_weight(message: Message, where: str, *, allow_weight: bool) -> None:
    if not allow_weight:
        raise _Problem(f"{where} has 'weight', which only supervised examples may have")
    if message["role"] != "assistant":
        raise _Problem(f"{where} has 'weight', which only assistant messages may have")
    weight = message["weight"]
    # bool is a subclass of int, and 1.0 would slip past an equality test: check the type.
    if type(weight) is not int or weight not in (0, 1):
        raise _Problem(f"{where} has weight {json.dumps(weight)}; weight must be 0 or 1")


def _json_type(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)
