"""The CUDA path's arguments, pinned without a GPU: where training and serving differ on CUDA,
the values come from pure functions, so a CPU-only run catches a typo before a GPU box does."""

import dataclasses
from pathlib import Path

import pytest
import torch

from serving.engine import VLLMEngine
from serving.settings import ServingSettings
from storage.base_models import BaseModelSpec
from training.hyperparameters import Hyperparameters
from training.trainer import Device, RunConfig, _common_args, dpo_loss, model_load_kwargs


def run_config(tmp_path: Path, use_qlora: bool = True) -> RunConfig:
    hp = Hyperparameters(n_epochs=1, batch_size=2, learning_rate_multiplier=1.0, learning_rate=2e-4,
                         use_qlora=use_qlora, max_seq_length=512)
    return RunConfig(method="supervised", model_dir=tmp_path / "base",
                     output_dir=tmp_path / "out", hyperparameters=hp, seed=7)


def precision_and_optimizer(args: dict[str, object]) -> dict[str, object]:
    return {key: args[key] for key in ("bf16", "fp16", "optim")}


def test_cuda_loads_a_4_bit_base_and_lets_unsloth_pick_the_dtype(tmp_path: Path) -> None:
    assert model_load_kwargs(run_config(tmp_path), Device(cuda=True, bf16=True)) == {
        "model_name": str(tmp_path / "base"),
        "max_seq_length": 512,
        "load_in_4bit": True,
        "dtype": None,
    }


@pytest.mark.parametrize(("native_bf16", "dtype"), [(True, torch.bfloat16),
                                                     (False, torch.float32)])
def test_cpu_loads_the_base_in_bfloat16_only_where_it_is_native(
    tmp_path: Path, native_bf16: bool, dtype: torch.dtype
) -> None:
    assert model_load_kwargs(run_config(tmp_path), Device(cuda=False, bf16=native_bf16)) == {
        "model_name": str(tmp_path / "base"),
        "max_seq_length": 512,
        "load_in_4bit": True,
        "dtype": dtype,
    }


def test_without_qlora_the_base_is_not_quantized(tmp_path: Path) -> None:
    cfg = run_config(tmp_path, use_qlora=False)
    assert model_load_kwargs(cfg, Device(cuda=True, bf16=True))["load_in_4bit"] is False
    assert model_load_kwargs(cfg, Device(cuda=False, bf16=False))["load_in_4bit"] is False


def test_cuda_trains_with_8_bit_adamw_in_bfloat16_where_the_gpu_has_it(tmp_path: Path) -> None:
    args = _common_args(run_config(tmp_path), False, Device(cuda=True, bf16=True))
    assert precision_and_optimizer(args) == {"bf16": True, "fp16": False, "optim": "adamw_8bit"}


def test_a_gpu_without_bfloat16_trains_in_float16(tmp_path: Path) -> None:
    args = _common_args(run_config(tmp_path), False, Device(cuda=True, bf16=False))
    assert precision_and_optimizer(args) == {"bf16": False, "fp16": True, "optim": "adamw_8bit"}


def test_cpu_trains_with_torch_adamw_in_bfloat16_where_native(tmp_path: Path) -> None:
    args = _common_args(run_config(tmp_path), False, Device(cuda=False, bf16=True))
    assert precision_and_optimizer(args) == {"bf16": True, "fp16": False, "optim": "adamw_torch"}


def test_a_cpu_without_native_bfloat16_trains_in_float32(tmp_path: Path) -> None:
    args = _common_args(run_config(tmp_path), False, Device(cuda=False, bf16=False))
    assert precision_and_optimizer(args) == {"bf16": False, "fp16": False, "optim": "adamw_torch"}


@pytest.mark.parametrize("cuda", [True, False])
def test_training_arguments_are_ones_trl_knows(tmp_path: Path, cuda: bool) -> None:
    from transformers.training_args import OptimizerNames
    from trl import DPOConfig, SFTConfig

    args = _common_args(run_config(tmp_path), True, Device(cuda=cuda, bf16=False))
    for config in (SFTConfig, DPOConfig):
        assert set(args) <= {f.name for f in dataclasses.fields(config)}, config.__name__
    assert OptimizerNames(args["optim"])


@pytest.mark.parametrize("rpo_alpha", [None, 0.0, 0.5])
def test_dpo_adds_its_sft_term_as_trl_weighs_it(tmp_path: Path,
                                                 rpo_alpha: float | None) -> None:
    from trl import DPOConfig

    hp = dataclasses.replace(run_config(tmp_path).hyperparameters, beta=0.1,
                             rpo_alpha=rpo_alpha)
    config = DPOConfig(output_dir=str(tmp_path), bf16=False, **dpo_loss(hp))
    weights = dict(zip(config.loss_type, config.loss_weights or [1.0], strict=False))
    assert weights == ({"sigmoid": 1.0, "sft": 0.5} if rpo_alpha else {"sigmoid": 1.0})


def engine(tmp_path: Path) -> VLLMEngine:
    settings = ServingSettings(data_dir=tmp_path, max_loras=4,
                               max_cpu_loras=16, max_lora_rank=32, max_model_len=2048,
                               kv_cache_gib=3, gpu_memory_utilization=0.85)
    return VLLMEngine(settings, BaseModelSpec("base", tmp_path / "base"))


def vllm_arguments(command: list[str]) -> list[str]:
    """What follows `-m vllm.entrypoints.openai.api_server` (the launcher before it varies)."""
    return command[command.index("-m") + 2:]


def common_vllm_arguments(tmp_path: Path) -> list[str]:
    return [
        "--model", str(tmp_path / "base"), "--served-model-name", "base",
        "--uds", str(engine(tmp_path).socket_path),
        "--enable-lora", "--max-lora-rank", "32", "--max-loras", "4", "--max-cpu-loras", "16",
        "--max-model-len", "2048",
    ]


def test_vllm_on_cuda_takes_the_model_dtype_and_a_share_of_gpu_memory(tmp_path: Path) -> None:
    assert vllm_arguments(engine(tmp_path).command(cuda=True)) == [
        *common_vllm_arguments(tmp_path),
        "--dtype", "auto", "--gpu-memory-utilization", "0.85",
        "--disable-uvicorn-access-log",
    ]


def test_vllm_on_the_cpu_runs_in_bfloat16_without_gpu_flags(tmp_path: Path) -> None:
    assert vllm_arguments(engine(tmp_path).command(cuda=False)) == [
        *common_vllm_arguments(tmp_path),
        "--dtype", "bfloat16",
        "--disable-uvicorn-access-log",
    ]


def test_cpu_kv_cache_settings_are_only_given_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
                 "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(name, raising=False)
    cpu = engine(tmp_path).environment(cuda=False)
    gpu = engine(tmp_path).environment(cuda=True)
    assert cpu["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert not {k for k in gpu if k.startswith("VLLM_CPU_")}
    for env in (cpu, gpu):
        assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_the_gpu_memory_share_defaults_to_nine_tenths(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNESERVE_GPU_MEMORY_UTILIZATION", raising=False)
    assert ServingSettings(data_dir=tmp_path).gpu_memory_utilization == 0.9


@pytest.mark.parametrize(("config", "four_bit"), [
    # Llama-3.1-8B's shape: QLoRA, as a job of it would train by default.
    ({"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "vocab_size": 128256, "max_position_embeddings": 8192}, True),
    # SmolLM2-135M's: a 16-bit base, as its jobs.
    ({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
      "vocab_size": 49152, "max_position_embeddings": 8192}, False),
])
def test_a_tinker_trainer_loads_its_base_on_cuda_as_a_job_would(
    tmp_path: Path, config: dict[str, int], four_bit: bool
) -> None:
    import json

    from training.tinker.trainer import run_config

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps(config))
    cfg = run_config({"rank": 16, "train_mlp": False}, BaseModelSpec("b", tmp_path / "base"),
                     tmp_path / "work")
    kwargs = model_load_kwargs(cfg, Device(cuda=True, bf16=True))
    assert kwargs["load_in_4bit"] is four_bit and kwargs["dtype"] is None
    assert cfg.hyperparameters.lora_rank == 16
    assert cfg.hyperparameters.max_seq_length == 8192
    assert set(cfg.hyperparameters.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
