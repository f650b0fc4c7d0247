"""One training run: Unsloth's FastLanguageModel with LoRA (4-bit base for QLoRA) under TRL's
SFTTrainer or DPOTrainer. The same code path on CUDA and on the CPU (Unsloth's CPU fallback)."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.hyperparameters import Hyperparameters


@dataclass
class RunConfig:
    """Everything `build_trainer` needs, resolved by the worker from the job."""

    method: str  # "supervised" | "dpo"
    model_dir: Path
    output_dir: Path
    hyperparameters: Hyperparameters
    seed: int
    logging_steps: int = 1
    eval_steps: int | None = None
    report_to: list[str] = field(default_factory=list)


def prepare_environment() -> None:
    """Must run before `unsloth` is imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    # On the CPU, Unsloth's chunked cross-entropy returns no logits, and TRL then cannot
    # report token accuracy; the plain loss is the same number.
    os.environ.setdefault("UNSLOTH_CPU_CHUNKED_CE", "0")


def load_model(cfg: RunConfig) -> tuple[Any, Any]:
    prepare_environment()
    import torch
    import unsloth  # noqa: F401  - patches TRL and transformers; must come first
    from unsloth import FastLanguageModel

    hp = cfg.hyperparameters
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(cfg.model_dir),
        max_seq_length=hp.max_seq_length,
        load_in_4bit=hp.use_qlora,
        dtype=None if torch.cuda.is_available() else torch.bfloat16,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules,
        use_gradient_checkpointing="unsloth",
        random_state=cfg.seed,
    )
    return model, tokenizer


def _common_args(cfg: RunConfig, has_eval: bool) -> dict[str, Any]:
    import torch

    hp = cfg.hyperparameters
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(cfg.output_dir),
        "num_train_epochs": hp.n_epochs,
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "learning_rate": hp.learning_rate(cfg.method),
        "lr_scheduler_type": "linear",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        # A checkpoint at each epoch end; the worker uploads it and prunes old ones.
        "save_strategy": "epoch",
        "eval_strategy": "steps" if has_eval and cfg.eval_steps else "no",
        "eval_steps": cfg.eval_steps if has_eval else None,
        "bf16": (torch.cuda.is_bf16_supported() if cuda else True),
        "optim": "adamw_8bit" if cuda else "adamw_torch",
        "report_to": cfg.report_to,
        "disable_tqdm": True,
        "max_length": hp.max_seq_length,
        "dataloader_num_workers": 0,
    }


def build_trainer(
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, Any]],
    valid_rows: list[dict[str, Any]],
    callbacks: list[Any],
) -> Any:
    from datasets import Dataset

    train = Dataset.from_list(train_rows)
    valid = Dataset.from_list(valid_rows) if valid_rows else None
    args = _common_args(cfg, valid is not None)
    if cfg.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        beta = cfg.hyperparameters.beta
        return DPOTrainer(
            # ref_model=None with a PEFT model: the reference is the policy with its adapter
            # disabled, so no second copy of the base is loaded.
            model=model, ref_model=None, args=DPOConfig(**args, beta=beta),
            train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
            callbacks=callbacks,
        )
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(
        model=model, args=SFTConfig(**args, completion_only_loss=True),
        train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
        callbacks=callbacks,
    )
