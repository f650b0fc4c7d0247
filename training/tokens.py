"""Counts a conversation's tokens the way training will see it: through the base model's own
tokenizer and chat template."""

import functools
import threading
from pathlib import Path
from typing import Any

from training.validation import Message


class ChatTokenCounter:
    def __init__(self, model_dir: Path) -> None:
        # Imported here: only processes that validate or train pay for transformers.
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def __call__(self, messages: list[Message], tools: list[Any] | None = None) -> int:
        try:
            ids: Any = self.tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=True, add_generation_prompt=False
            )
        except Exception:
            # A template that cannot render tool calls still gets a fair count from the text.
            text = "\n".join(f"{m.get('role')}: {_text(m)}" for m in messages)
            ids = self.tokenizer(text)["input_ids"]
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    parts = [str(content or "")]
    if message.get("tool_calls"):
        parts.append(str(message["tool_calls"]))
    return " ".join(parts)


# Validations run in threads: transformers' lazy first import, and loading one tokenizer
# twice, must not race.
_loading = threading.Lock()


def token_counter(model_dir: Path) -> ChatTokenCounter:
    with _loading:
        return _token_counter(model_dir)


@functools.cache
def _token_counter(model_dir: Path) -> ChatTokenCounter:
    return ChatTokenCounter(model_dir)
