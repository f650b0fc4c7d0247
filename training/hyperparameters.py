"""Resolves a job's hyperparameters: OpenAI's `"auto"` rules plus our LoRA extensions."""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# LoRA trains best at a much higher rate than full fine-tuning; the multiplier scales these.
BASE_LEARNING_RATE = {"supervised": 2e-4, "dpo": 5e-5}
DEFAULT_BETA = 0.1

# OpenAI's epoch rule: aim for 100..25,000 examples seen, 3 epochs when that range allows.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_DEFAULT_EPOCHS = 3, 100, 25_000, 25


def auto_epochs(n_examples: int) -> int:
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, as OpenAI does, within 1..256."""
    return max(1, min(256, round(n_examples * 0.002)))


@dataclass
class Hyperparameters:
    """Every number a training run needs; what the job shows once resolved."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    use_qlora: bool = True
    max_seq_length: int = 2048
    beta: float | None = None

    def learning_rate(self, method: str) -> float:
        return BASE_LEARNING_RATE[method] * self.learning_rate_multiplier

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["beta"] is None:
            del data["beta"]
        return data


def resolve(
    method: str, given: dict[str, Any], n_examples: int, context_length: int
) -> Hyperparameters:
    """`given` holds the job's hyperparameters as sent (values may be "auto" or absent)."""

    def pick(name: str, auto: Any) -> Any:
        value = given.get(name)
        return auto if value in (None, "auto") else value

    return Hyperparameters(
        n_epochs=int(pick("n_epochs", auto_epochs(n_examples))),
        batch_size=int(pick("batch_size", auto_batch_size(n_examples))),
        learning_rate_multiplier=float(pick("learning_rate_multiplier", 1.0)),
        lora_rank=int(pick("lora_rank", 16)),
        lora_alpha=int(pick("lora_alpha", 16)),
        lora_dropout=float(pick("lora_dropout", 0.0)),
        target_modules=list(pick("target_modules", ALL_PROJECTIONS)),
        use_qlora=bool(pick("use_qlora", True)),
        max_seq_length=min(int(pick("max_seq_length", 2048)), context_length),
        beta=float(pick("beta", DEFAULT_BETA)) if method == "dpo" else None,
    )
