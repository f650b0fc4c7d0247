"""How training files become training rows: a multi-turn conversation is one row whose loss
covers exactly the assistant turns it trains on (checked on the real SmolLM2 tokenizer)."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from storage.base_models import DEFAULT_BASE_MODEL
from training.data import sft_dataset_rows, sft_rows

CONVERSATION = {"messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another."},
    {"role": "assistant", "content": "Blue, I think.", "weight": 0},
    {"role": "user", "content": "And a fruit?"},
    {"role": "assistant", "content": "Pear."},
]}


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(models_dir / DEFAULT_BASE_MODEL)


def test_a_conversation_is_one_row_with_loss_on_its_trained_turns(tokenizer) -> None:  # type: ignore[no-untyped-def]
    (row,) = sft_dataset_rows([CONVERSATION], tokenizer)
    ids, mask = row["input_ids"], row["assistant_masks"]
    assert len(ids) == len(mask)
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "Red." in trained and "Pear." in trained
    # Context only: the weight-0 answer, the user turns, the system prompt.
    for context in ("Blue", "colour", "fruit", "terse"):
        assert context not in trained
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION["messages"],
                                                                  tokenize=False)
    # Before: one row per trained assistant message, each repeating the conversation so far.
    assert len(sft_rows(CONVERSATION)) == 2


def test_records_without_a_trained_answer_give_no_row(tokenizer) -> None:  # type: ignore[no-untyped-def]
    silent = {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello", "weight": 0}]}
    assert sft_dataset_rows([silent, CONVERSATION], tokenizer) == sft_dataset_rows(
        [CONVERSATION], tokenizer)


def test_a_template_that_does_not_render_prefixes_falls_back_to_a_row_per_answer(  # type: ignore[no-untyped-def]
    tokenizer,
) -> None:
    class Reversing:
        """A template whose rendering of a prefix is not a prefix of the whole."""

        def apply_chat_template(self, messages, **_: object) -> str:  # type: ignore[no-untyped-def]
            return "|".join(m["content"] for m in reversed(messages))

    rows = sft_dataset_rows([CONVERSATION], Reversing())
    assert rows == sft_rows(CONVERSATION)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_reinforcement_prompts_show_their_row_s_tools(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from training.rewards import ITEM_COLUMN, rft_rows

    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    plain, with_tools = rft_rows([{"messages": ask, "answer": "x"},
                                  {"messages": ask, "tools": [WEATHER_TOOL]}], tokenizer)
    # Rendered as the model would see them in serving: the tools in the second prompt only,
    # each ending where the assistant answers.
    assert "get_weather" in with_tools["prompt"] and "get_weather" not in plain["prompt"]
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in (plain, with_tools))
    assert '"answer": "x"' in plain[ITEM_COLUMN]
    # Without any tools the prompts stay conversations (TRL applies the template itself).
    (row,) = rft_rows([{"messages": ask}], tokenizer)
    assert row["prompt"] == ask


def test_preference_rows_keep_their_tools() -> None:
    from training.data import dpo_row

    answer = [{"role": "assistant", "content": "Sunny."}]
    row = dpo_row({"input": {"messages": [{"role": "user", "content": "Oslo?"}],
                             "tools": [WEATHER_TOOL]},
                   "preferred_output": answer, "non_preferred_output": answer})
    assert json.loads(row["tools"]) == [WEATHER_TOOL]
    # Rows whose tools differ stay as they were in one dataset (TRL's reads JSON text).
    other = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"city": {"type": ["string", "null"]}}}}}
    from datasets import Dataset

    rows = [row, {**row, "tools": json.dumps([other])}]
    assert [json.loads(r["tools"]) for r in Dataset.from_list(rows)] == [[WEATHER_TOOL], [other]]


def test_legacy_function_calls_and_text_parts_are_trained_as_written(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from training.normalize import normalized

    record = normalized({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in"},
                                     {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": None,
         "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."}],
        "functions": [WEATHER_TOOL["function"]]})
    (row,) = sft_dataset_rows([record], tokenizer)
    trained = tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"],
                                                  strict=True) if m])
    # The call is trained on (not an empty reply), and so is the answer after its result.
    assert '"name": "get_weather"' in trained and "Sunny." in trained
    assert "Weather in\nOslo?" in tokenizer.decode(row["input_ids"])
