"""Resolves a job's hyperparameters: OpenAI's `"auto"` rules plus our LoRA extensions."""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_LORA_RANK = 16
# DPO's beta (how far from the reference the policy may go): the DPO paper's and TRL's 0.1.
# Beside the SFT term below it matters little: `bench/quality.py --tasks style`, 1 epoch,
# rpo_alpha 1, beta 0.02 / 0.1 / 0.5: preference accuracy 1.0 and JSON 1.0 for all three,
# exact answers 0.35 / 0.45 / 0.55.
DEFAULT_BETA = 0.1
# DPO's SFT term (RPO: Pang et al., "Iterative Reasoning Preference Optimization", 2024; TRL's
# `rpo_alpha`, now its "sft" loss): the mean negative log-likelihood of the preferred answer,
# this many times, is added to the DPO loss. DPO alone widens the margin mostly by pushing
# the rejected answer down, which on small data leaves greedy answers as they were. Measured
# with `bench/quality.py --tasks style` (SmolLM2-135M, 32 pairs: JSON preferred over a
# sentence of the same length, 20 held-out prompts; base: preference accuracy 0, JSON 0):
#     1 epoch, plain DPO:          preference accuracy 1.0, greedy answers JSON 0.0
#     1 epoch, rpo_alpha 1:        preference accuracy 1.0, greedy answers JSON 1.0
#     4 epochs (auto), plain DPO:  preference accuracy 1.0, greedy answers JSON 0.8
#     4 epochs (auto), rpo_alpha 1: preference accuracy 1.0, greedy answers JSON 1.0
DEFAULT_RPO_ALPHA = 1.0

# OpenAI's epoch rule: aim for 100..25,000 examples seen, 3 epochs when that range allows.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_DEFAULT_EPOCHS = 3, 100, 25_000, 25

# The `auto` learning rate. The best LoRA rate falls with the model's width, and under LoRA's
# alpha/r scaling it hardly depends on the rank at a fixed alpha (Thinking Machines, "LoRA
# Without Regret", 2025; Tinker's supervised-learning hyperparameter guide):
#     rate = 5e-5 x 10 (LoRA over full fine-tuning) x (2000 / hidden_size) ** P
# with P = 0.781 for Llama-like models and 0.0775 for Qwen, at lora_alpha 32 on any rank.
# A 7B-class Llama (hidden 4096) gets 2.9e-4 -- the usual 2e-4 of QLoRA at 7B; SmolLM2-135M
# (hidden 576) gets 1.3e-3, which is what makes a short run on a small model learn at all
# (the old fixed 2e-4 left the default model at chance on held-out phrasings).
# What the adapter changes scales with lr x alpha, so another alpha gets the rate x 32/alpha.
# DPO keeps a quarter of the SFT rate, the ratio of TRL's and Unsloth's DPO to SFT examples.
RATE_REFERENCE_WIDTH, RATE_AT_REFERENCE, RULE_ALPHA = 2000, 5e-4, 32
WIDTH_EXPONENT = {"qwen2": 0.0775, "qwen3": 0.0775, "qwen2_moe": 0.0775, "qwen3_moe": 0.0775}
LLAMA_WIDTH_EXPONENT = 0.781
# Reinforcement (GRPO, LoRA, no KL term) keeps the SFT rate: measured on SmolLM2-135M, 16
# yes/no prompts, a string_check reward, 4 answers each: the mean reward went 0, 0.13, 0.75,
# 0.94, 1 over the first five steps at 2e-3 (the SFT rule gives 1.3e-3, x2 for a short run).
METHOD_RATE_FACTOR = {"supervised": 1.0, "dpo": 0.25, "reinforcement": 1.0}
# Runs with few optimizer steps under a linearly decaying rate move the adapter less; the same
# guide finds their best rate higher. Below this many steps the rate is raised, up to 2x.
SHORT_RUN_STEPS = 100
MAX_SHORT_RUN_BOOST = 2.0
# Training sequences are padded up to the longest example, rounded up to this.
SEQ_LENGTH_ROUNDING = 64
# QLoRA (a 4-bit base) buys memory, which matters from about a billion parameters up; below,
# the 16-bit base fits anywhere and dequantizing costs speed (2.1x slower a step for
# SmolLM2-135M on this project's CPU: 2.45 s vs 1.17 s).
QLORA_FROM_PARAMETERS = 1_000_000_000
# Reinforcement: answers sampled per prompt (GRPO's group; x compute_multiplier) and their
# length in tokens.
DEFAULT_NUM_GENERATIONS = 4
DEFAULT_MAX_COMPLETION_TOKENS = 128


def auto_epochs(n_examples: int) -> int:
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, as OpenAI does, within 1..256."""
    return max(1, min(256, round(n_examples * 0.002)))


@dataclass(frozen=True)
class ModelShape:
    """What the learning-rate rule reads from a base model's config.json."""

    hidden_size: int
    model_type: str
    # Estimated from the config (embeddings, attention and MLP of each layer).
    parameters: int = 0

    @classmethod
    def of(cls, config: dict[str, Any]) -> "ModelShape":
        hidden = int(config.get("hidden_size", 4096))
        layer = 4 * hidden * hidden + 3 * hidden * int(config.get("intermediate_size", 4 * hidden))
        parameters = (int(config.get("vocab_size", 32000)) * hidden
                      + int(config.get("num_hidden_layers", 32)) * layer)
        return cls(hidden_size=hidden, model_type=str(config.get("model_type", "llama")),
                   parameters=parameters)


def reference_learning_rate(method: str, shape: ModelShape, lora_alpha: int) -> float:
    """The rate a multiplier of 1 means for this model, method and alpha (the rule above)."""
    exponent = WIDTH_EXPONENT.get(shape.model_type, LLAMA_WIDTH_EXPONENT)
    # float ** float is typed Any (a negative base gives a complex); this base is positive.
    rate: float = RATE_AT_REFERENCE * (RATE_REFERENCE_WIDTH / shape.hidden_size) ** exponent
    return rate * (RULE_ALPHA / lora_alpha) * METHOD_RATE_FACTOR[method]


def auto_multiplier(total_steps: int) -> float:
    """1 for runs of SHORT_RUN_STEPS steps or more; up to MAX_SHORT_RUN_BOOST for shorter."""
    if total_steps >= SHORT_RUN_STEPS:
        return 1.0
    return round(min(MAX_SHORT_RUN_BOOST, math.sqrt(SHORT_RUN_STEPS / max(1, total_steps))), 3)


def auto_max_seq_length(longest_example: int, context_length: int) -> int:
    rounded = -(-longest_example // SEQ_LENGTH_ROUNDING) * SEQ_LENGTH_ROUNDING
    return max(SEQ_LENGTH_ROUNDING, min(rounded, context_length))


@dataclass
class Hyperparameters:
    """Every number a training run needs; what the job shows once resolved."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    # The resolved rate itself: the model's reference rate x the multiplier.
    learning_rate: float
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = RULE_ALPHA
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    use_qlora: bool = True
    max_seq_length: int = 2048
    beta: float | None = None
    rpo_alpha: float | None = None
    # Reinforcement only. With a validation file: every `eval_interval` steps, each
    # validation prompt gets `eval_samples` answers, graded like the training ones.
    num_generations: int | None = None
    max_completion_tokens: int | None = None
    eval_interval: int | None = None
    eval_samples: int | None = None

    @classmethod
    def from_job(cls, method: str, resolved: dict[str, Any]) -> "Hyperparameters":
        """A job's resolved hyperparameters. Jobs resolved before the rate was stored keep
        the rule they were validated under (2e-4 SFT, 5e-5 DPO, x the multiplier)."""
        if "learning_rate" not in resolved:
            legacy = {"supervised": 2e-4, "dpo": 5e-5}[method]
            resolved = {**resolved,
                        "learning_rate": legacy * resolved["learning_rate_multiplier"]}
        return cls(**resolved)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if v is not None or k not in _METHOD_ONLY}


_METHOD_ONLY = ("beta", "rpo_alpha", "num_generations", "max_completion_tokens", "eval_interval",
                "eval_samples")


def resolve(method: str, given: dict[str, Any], *, n_examples: int, longest_example: int,
            context_length: int, shape: ModelShape) -> Hyperparameters:
    """`given` holds the job's hyperparameters as sent (values may be "auto" or absent)."""

    def pick(name: str, auto: Any) -> Any:
        value = given.get(name)
        return auto if value in (None, "auto") else value

    n_epochs = int(pick("n_epochs", auto_epochs(n_examples)))
    batch_size = int(pick("batch_size", auto_batch_size(n_examples)))
    steps_per_epoch = -(-n_examples // batch_size)
    total_steps = n_epochs * steps_per_epoch
    multiplier = float(pick("learning_rate_multiplier", auto_multiplier(total_steps)))
    lora_alpha = int(pick("lora_alpha", RULE_ALPHA))
    rate = reference_learning_rate(method, shape, lora_alpha) * multiplier
    sampling = _reinforcement(pick, steps_per_epoch) if method == "reinforcement" else {}
    # A reinforcement example is its prompt; the sequence is the prompt and a sampled answer.
    longest_example += sampling.get("max_completion_tokens", 0)
    return Hyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=float(f"{rate:.3g}"),
        lora_rank=int(pick("lora_rank", DEFAULT_LORA_RANK)),
        lora_alpha=lora_alpha,
        lora_dropout=float(pick("lora_dropout", 0.0)),
        target_modules=list(pick("target_modules", ALL_PROJECTIONS)),
        use_qlora=bool(pick("use_qlora", shape.parameters >= QLORA_FROM_PARAMETERS)),
        max_seq_length=min(int(pick("max_seq_length",
                                    auto_max_seq_length(longest_example, context_length))),
                           context_length),
        beta=float(pick("beta", DEFAULT_BETA)) if method == "dpo" else None,
        rpo_alpha=float(pick("rpo_alpha", DEFAULT_RPO_ALPHA)) if method == "dpo" else None,
        **sampling,
    )


def _reinforcement(pick: Any, steps_per_epoch: int) -> dict[str, int]:
    compute = float(pick("compute_multiplier", 1.0))
    return {"num_generations": int(pick("num_generations",
                                        max(2, round(DEFAULT_NUM_GENERATIONS * compute)))),
            "max_completion_tokens": int(pick("max_completion_tokens",
                                              DEFAULT_MAX_COMPLETION_TOKENS)),
            # Twice an epoch, as supervised jobs are evaluated; one answer per prompt.
            "eval_interval": int(pick("eval_interval", max(1, steps_per_epoch // 2))),
            "eval_samples": int(pick("eval_samples", 1))}
