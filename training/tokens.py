"""Counts a conversation's tokens the way training will see it: through the base model's own
tokenizer and chat template."""

import functools
import threading
from pathlib import Path
from typing import Any

from training.validation import Message, UnrenderableExample


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
        except Exception as exc:
            # Training renders with the same template: an example it cannot render (tool
            # calls on a template without tools, say) fails now, naming its line.
            raise UnrenderableExample(f"{type(exc).__name__}: {exc}"[:300]) from None
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)


# Validations run in threads: transformers' lazy first import, and loading one tokenizer
# twice, must not race.
_loading = threading.Lock()


def token_counter(model_dir: Path) -> ChatTokenCounter:
    with _loading:
        return _token_counter(model_dir)


@functools.cache
def _token_counter(model_dir: Path) -> ChatTokenCounter:
    return ChatTokenCounter(model_dir)
