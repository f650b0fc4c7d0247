"""Fine-tuning file validation: one test per rule, with a word-counting stand-in tokenizer."""

import json
from typing import Any

import pytest

from training.validation import (
    DatasetError,
    DatasetStats,
    Message,
    UnrenderableExample,
    parse_line,
    validate_training_file,
)

CONTEXT = 100


def count_tokens(messages: list[Message], tools: list | None = None) -> int:  # type: ignore[type-arg]
    # Words plus a fixed per-message overhead, roughly what a chat template adds.
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


def sft_record(answer: str = "four") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": answer},
        ]
    }


def dpo_record() -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi there friend"}],
        "non_preferred_output": [{"role": "assistant", "content": "No"}],
    }


def to_lines(records: list[Any], ending: bytes = b"\n") -> list[bytes]:
    return [json.dumps(record).encode() + ending for record in records]


def validate(lines: list[bytes], **kwargs: Any) -> DatasetStats:
    options: dict[str, Any] = {
        "method": "supervised",
        "count_tokens": count_tokens,
        "context_length": CONTEXT,
    }
    options.update(kwargs)
    return validate_training_file(lines, **options)


def expect_error(
    lines: list[bytes], code: str, line: int | None, *, param: str = "training_file", **kwargs: Any
) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        validate(lines, param=param, **kwargs)
    error = info.value
    assert error.code == code
    assert error.param == param
    assert str(error) == error.message
    if line is not None:
        assert error.message.startswith(f"Line {line}: ")
    return error


def sft_file_with_bad_line(bad: Any, at: int = 3) -> list[bytes]:
    """Ten good examples with `bad` in place of line `at` (1-based)."""
    lines = to_lines([sft_record() for _ in range(10)])
    lines[at - 1] = json.dumps(bad).encode() + b"\n"
    return lines


# --- whole files ------------------------------------------------------------------------------


def test_good_sft_file_passes_with_stats() -> None:
    records = [sft_record() for _ in range(9)] + [sft_record("four, obviously enough")]
    stats = validate(to_lines(records))
    # system 3+4, user 5+4, assistant 1+4 = 21; the last answer has 3 words, so 23.
    assert stats == DatasetStats(n_examples=10, n_tokens=9 * 21 + 23, max_tokens=23)


def test_nine_examples_is_too_few() -> None:
    error = expect_error(to_lines([sft_record() for _ in range(9)]), "invalid_n_examples", None)
    assert error.message == "Training file has 9 example(s), but must have at least 10 examples"


def test_empty_file_is_too_few_even_with_minimum_one() -> None:
    error = expect_error([b"\n", b"  \r\n"], "invalid_n_examples", None, min_examples=1)
    assert error.message == "Training file has 0 example(s), but must have at least 1 examples"


def test_validation_file_param_and_wording() -> None:
    lines = to_lines([sft_record() for _ in range(2)])
    assert validate(lines, param="validation_file", min_examples=1).n_examples == 2

    error = expect_error([], "invalid_n_examples", None, param="validation_file", min_examples=1)
    assert error.message == "Validation file has 0 example(s), but must have at least 1 examples"

    bad = sft_file_with_bad_line({"messages": []}, at=2)
    expect_error(bad, "invalid_file_format", 2, param="validation_file", min_examples=1)


def test_line_numbers_count_blank_lines() -> None:
    lines = [b"\n", b"   \n"] + to_lines([sft_record() for _ in range(10)])
    lines.insert(5, b"\t\r\n")
    lines.append(b"{not json}\n")  # the 14th line of the file
    assert len(lines) == 14
    expect_error(lines, "invalid_file_format", 14)


def test_crlf_line_endings_accepted() -> None:
    lines = to_lines([sft_record() for _ in range(10)], ending=b"\r\n")
    assert validate(lines).n_examples == 10


# --- parsing ----------------------------------------------------------------------------------


def test_not_json() -> None:
    lines = to_lines([sft_record() for _ in range(10)])
    lines[3] = b"{'messages': []}\n"  # Python repr, not JSON
    error = expect_error(lines, "invalid_file_format", 4)
    assert "JSON" in error.message


def test_not_utf8() -> None:
    lines = to_lines([sft_record() for _ in range(10)])
    lines[1] = b'{"messages": "\xff"}\n'
    error = expect_error(lines, "invalid_file_format", 2)
    assert "UTF-8" in error.message


def test_json_array_line() -> None:
    error = expect_error(sft_file_with_bad_line([sft_record()], at=5), "invalid_file_format", 5)
    assert "object" in error.message


def test_parse_line_blank_and_object() -> None:
    assert parse_line(b"  \r\n", 1, "training_file") is None
    assert parse_line(b'\xef\xbb\xbf{"a": 1}\r\n', 1, "training_file") == {"a": 1}


# --- supervised structure ---------------------------------------------------------------------


def test_missing_messages() -> None:
    error = expect_error(sft_file_with_bad_line({"tools": []}), "invalid_file_format", 3)
    assert "messages" in error.message


def test_unknown_role() -> None:
    record = sft_record()
    record["messages"][1]["role"] = "human"
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "'human'" in error.message and "messages[1]" in error.message


def test_unknown_top_level_key() -> None:
    record = sft_record() | {"prompt": "hi"}
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "'prompt'" in error.message


def test_unknown_message_key() -> None:
    record = sft_record()
    record["messages"][2]["score"] = 5
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "'score'" in error.message and "messages[2]" in error.message


def test_no_assistant_message() -> None:
    record = {"messages": [{"role": "user", "content": "hello"}]}
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "assistant" in error.message


def test_fractional_weight() -> None:
    record = sft_record()
    record["messages"][2]["weight"] = 0.5
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "weight" in error.message and "0.5" in error.message


def test_boolean_weight() -> None:
    record = sft_record()
    record["messages"][2]["weight"] = True
    expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)


def test_weight_on_user_message() -> None:
    record = sft_record()
    record["messages"][1]["weight"] = 1
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "weight" in error.message and "messages[1]" in error.message


def test_all_assistant_weights_zero() -> None:
    record = sft_record()
    record["messages"] += [
        {"role": "user", "content": "And three plus three?"},
        {"role": "assistant", "content": "six", "weight": 0},
    ]
    record["messages"][2]["weight"] = 0
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "weight 0" in error.message


def test_tool_call_assistant_with_null_content_passes() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    record = {
        "messages": [
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            {"role": "assistant", "content": "four", "weight": 1},
        ],
        "tools": [tool],
        "parallel_tool_calls": False,
    }
    assert validate(to_lines([record] * 10)).n_examples == 10


def test_null_content_without_tool_call_rejected() -> None:
    record = sft_record()
    record["messages"][2]["content"] = None
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "content" in error.message


# --- DPO --------------------------------------------------------------------------------------


def test_good_dpo_file_passes_with_stats() -> None:
    stats = validate(to_lines([dpo_record() for _ in range(10)]), method="dpo")
    # prompt 2+4 = 6; preferred 3+4 -> 13; non-preferred 1+4 -> 11.
    assert stats == DatasetStats(n_examples=10, n_tokens=10 * (13 + 11), max_tokens=13)


def test_dpo_missing_preferred_output() -> None:
    record = dpo_record()
    del record["preferred_output"]
    lines = to_lines([dpo_record(), record] + [dpo_record() for _ in range(8)])
    error = expect_error(lines, "invalid_file_format", 2, method="dpo")
    assert "preferred_output" in error.message


def test_dpo_non_preferred_output_with_user_role() -> None:
    record = dpo_record()
    record["non_preferred_output"][0]["role"] = "user"
    lines = to_lines([dpo_record() for _ in range(6)] + [record])
    error = expect_error(lines, "invalid_file_format", 7, method="dpo")
    assert "non_preferred_output[0]" in error.message and "assistant" in error.message


def test_dpo_rejects_weight() -> None:
    record = dpo_record()
    record["preferred_output"][0]["weight"] = 1
    expect_error(to_lines([record]), "invalid_file_format", 1, method="dpo")


def test_dpo_rejects_supervised_shape() -> None:
    error = expect_error(to_lines([sft_record()]), "invalid_file_format", 1, method="dpo")
    assert "'messages'" in error.message


# --- length -----------------------------------------------------------------------------------


def test_too_long_exceeds_context_length() -> None:
    long = sft_record(" ".join(["word"] * 200))  # 16 + 200 + 4 = 220 tokens
    lines = to_lines([sft_record() for _ in range(10)])
    lines.insert(7, json.dumps(long).encode() + b"\n")
    error = expect_error(lines, "exceeds_context_length", 8)
    assert error.message == (
        "Line 8: the example has 220 tokens, more than the base model's context length of 100"
    )


def test_dpo_too_long_non_preferred_output() -> None:
    record = dpo_record()
    record["non_preferred_output"][0]["content"] = " ".join(["no"] * 95)  # 6 + 99 = 105
    error = expect_error(to_lines([record]), "exceeds_context_length", 1, method="dpo")
    assert "105 tokens" in error.message


def test_exactly_context_length_passes() -> None:
    fits = sft_record(" ".join(["word"] * 80))  # 16 + 80 + 4 = 100 tokens
    assert validate(to_lines([fits] * 10)).max_tokens == CONTEXT


def test_tools_are_counted_with_the_conversation() -> None:
    seen = []

    def counting(messages: list[Message], tools: list | None = None) -> int:  # type: ignore[type-arg]
        seen.append(tools)
        return count_tokens(messages)

    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    record = {**sft_record(), "tools": tools}
    validate_training_file([json.dumps(record).encode()] * 10, method="supervised",
                           count_tokens=counting, context_length=CONTEXT)
    assert seen == [tools] * 10


# --- shapes OpenAI accepts, counted and trained in the modern one -----------------------------


def test_text_content_parts_are_counted_as_their_text() -> None:
    record = sft_record()
    record["messages"][1]["content"] = [{"type": "text", "text": "What is"},
                                        {"type": "text", "text": "two plus two?"}]
    as_parts = validate(to_lines([record] * 10))
    assert as_parts.n_tokens == validate(to_lines([sft_record()] * 10)).n_tokens


@pytest.mark.parametrize(("part", "says"), [
    ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, "image_url"),
    ({"type": "text"}, "string 'text'"),
])
def test_content_parts_other_than_text_are_refused(part: dict[str, Any], says: str) -> None:
    record = sft_record()
    record["messages"][1]["content"] = [part]
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "messages[1] content part 0" in error.message and says in error.message


def test_optional_fields_written_as_null_are_absent() -> None:
    # As a chat completion's own message dumps them.
    record = sft_record()
    record["messages"][2] |= {"tool_calls": None, "function_call": None, "refusal": None,
                              "name": None}
    assert validate(to_lines([record] * 10)).n_examples == 10


@pytest.mark.parametrize("calls", [[1], [{"id": "c"}], [{"function": {"name": "f"}}]])
def test_malformed_tool_calls_are_refused_naming_the_call(calls: list[Any]) -> None:
    record = sft_record()
    record["messages"][2] |= {"content": None, "tool_calls": calls}
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3)
    assert "messages[2] tool_calls[0].function" in error.message


def test_legacy_function_calling_is_trained_as_tool_calls() -> None:
    from training.normalize import normalized

    function = {"name": "add", "parameters": {"type": "object"}}
    record = {"messages": [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": None,
         "function_call": {"name": "add", "arguments": '{"a": 2, "b": 2}'}},
        {"role": "function", "name": "add", "content": "4"},
        {"role": "assistant", "content": "four"}], "functions": [function]}
    seen: list[tuple[list[Message], Any]] = []

    def counting(messages: list[Message], tools: list | None = None) -> int:  # type: ignore[type-arg]
        seen.append((messages, tools))
        return 10

    validate(to_lines([record] * 10), count_tokens=counting)
    messages, tools = seen[0]
    assert tools == [{"type": "function", "function": function}]
    assert messages[1]["tool_calls"] == [{"id": "call_0", "type": "function",
                                          "function": record["messages"][1]["function_call"]}]
    assert messages[2] == {"role": "tool", "name": "add", "content": "4",
                           "tool_call_id": "call_0"}
    assert normalized(record)["messages"] == messages and "functions" not in normalized(record)


def test_an_example_the_chat_template_cannot_render_is_refused_naming_its_line() -> None:
    def template(messages: list[Message], tools: list | None = None) -> int:  # type: ignore[type-arg]
        if any(m.get("tool_calls") for m in messages):
            raise UnrenderableExample("UndefinedError: no tool calls in this template")
        return 10

    record = sft_record()
    record["messages"][2] |= {"content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    error = expect_error(sft_file_with_bad_line(record), "invalid_file_format", 3,
                         count_tokens=template)
    assert "chat template cannot render" in error.message and "UndefinedError" in error.message


@pytest.mark.parametrize(("line", "says"), [
    (b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests too deeply"),
    (b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "surrogate"),
])
def test_json_no_reader_can_use_is_refused_naming_its_line(line: bytes, says: str) -> None:
    lines = to_lines([sft_record() for _ in range(10)])
    lines[2] = line + b"\n"
    assert says in expect_error(lines, "invalid_file_format", 3).message
