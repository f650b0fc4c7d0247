"""Reading training files from storage and turning OpenAI records into TRL datasets."""

import json
from collections.abc import Iterator
from typing import Any

from storage.blob import BlobStore
from training.normalize import normalized
from training.validation import parse_line


def read_lines(store: BlobStore, key: str) -> Iterator[bytes]:
    """The blob's lines, streamed (a file is never read whole)."""
    rest = b""
    for chunk in store.read(key):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def iter_records(store: BlobStore, key: str, param: str) -> Iterator[dict[str, Any]]:
    """The blob's records, streamed: a reader that needs only the first few never holds the
    rest (a validation file may be as large as a training file)."""
    for number, line in enumerate(read_lines(store, key), start=1):
        record = parse_line(line, number, param)
        if record is not None:
            yield normalized(record)  # validated already: its modern shape


def read_records(store: BlobStore, key: str, param: str) -> list[dict[str, Any]]:
    return list(iter_records(store, key, param))


def sft_conversation_row(record: dict[str, Any], tokenizer: Any) -> dict[str, Any] | None:
    """One training row for a whole conversation: its tokens, and a mask that is 1 on the
    assistant messages it trains on (`weight: 0` ones are context, like every other turn).

    TRL's `assistant_only_loss` needs `{% generation %}` markers that most chat templates
    lack, so the mask comes from rendering the conversation's prefixes: an assistant turn's
    tokens are those between the prefix before it (with the generation prompt) and the prefix
    that ends with it. None when the template does not render prefixes as prefixes (then the
    caller falls back to `sft_rows`)."""
    messages = [_clean(m) for m in record["messages"]]
    trained = [i for i, m in enumerate(record["messages"])
               if m.get("role") == "assistant" and m.get("weight", 1) != 0]
    tools = record.get("tools")

    def render(upto: int, generation_prompt: bool) -> str:
        text: str = tokenizer.apply_chat_template(messages[:upto], tools=tools, tokenize=False,
                                                  add_generation_prompt=generation_prompt)
        return text

    text = render(len(messages), False)
    spans = []
    for i in trained:
        before, through = render(i, True), render(i + 1, False)
        if not (text.startswith(before) and text.startswith(through)):
            return None
        spans.append((len(before), len(through)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start <= first < end for start, end in spans))
            for first, _ in encoded["offset_mapping"]]
    return {"input_ids": encoded["input_ids"], "assistant_masks": mask}


def sft_dataset_rows(records: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """A row per conversation where the template allows it, else a row per trained message."""
    rows = []
    for record in records:
        if not any(m.get("role") == "assistant" and m.get("weight", 1) != 0
                   for m in record["messages"]):
            continue
        row = sft_conversation_row(record, tokenizer)
        if row is None:
            return [row for r in records for row in sft_rows(r)]
        rows.append(row)
    return rows


def sft_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One prompt/completion row per trained assistant message, so the loss covers assistant
    tokens only and `weight: 0` messages are context, never targets (for templates whose
    prefixes do not render as prefixes)."""
    messages = record["messages"]
    rows = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("weight", 1) != 0:
            prompt = [_clean(m) for m in messages[:i]]
            row: dict[str, Any] = {"prompt": prompt, "completion": [_clean(message)]}
            if record.get("tools"):
                row["tools"] = tools_column(record["tools"])
            rows.append(row)
    return rows


def dpo_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": [_clean(m) for m in record["input"]["messages"]],
        "chosen": [_clean(m) for m in record["preferred_output"]],
        "rejected": [_clean(m) for m in record["non_preferred_output"]],
    }
    if record["input"].get("tools"):  # TRL renders a row's own tools with its prompt
        row["tools"] = tools_column(record["input"]["tools"])
    return row


def tools_column(tools: list[Any]) -> str:
    """A row's tools as TRL reads them from a dataset column: JSON text. As objects, Arrow
    would unify every row's schemas into one (filling in the others' fields with null) or
    refuse rows whose schemas disagree."""
    return json.dumps(tools)


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    # `weight` is ours to act on; chat templates should not see it.
    return {k: v for k, v in message.items() if k != "weight"}
