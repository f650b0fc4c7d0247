"""Reading training files from storage and turning OpenAI records into TRL datasets."""

from collections.abc import Iterator
from typing import Any

from storage.blob import BlobStore
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


def read_records(store: BlobStore, key: str, param: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(read_lines(store, key), start=1):
        record = parse_line(line, number, param)
        if record is not None:
            records.append(record)
    return records


def sft_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One prompt/completion row per trained assistant message, so the loss covers assistant
    tokens only (this model's template has no generation markers) and `weight: 0` messages
    are context, never targets."""
    messages = record["messages"]
    rows = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("weight", 1) != 0:
            prompt = [_clean(m) for m in messages[:i]]
            row: dict[str, Any] = {"prompt": prompt, "completion": [_clean(message)]}
            if record.get("tools"):
                row["tools"] = record["tools"]
            rows.append(row)
    return rows


def dpo_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": [_clean(m) for m in record["input"]["messages"]],
        "chosen": [_clean(m) for m in record["preferred_output"]],
        "rejected": [_clean(m) for m in record["non_preferred_output"]],
    }


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    # `weight` is ours to act on; chat templates should not see it.
    return {k: v for k, v in message.items() if k != "weight"}
