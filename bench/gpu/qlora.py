"""The CUDA training path once, on a GPU box without the hub: QLoRA (4-bit NF4 base, LoRA on
every projection) under TRL's SFTTrainer with the arguments our trainer builds for CUDA
(`training.trainer._common_args`: bf16, 8-bit AdamW). Prints tokens/s and peak GPU memory.

The base is built from a config (random weights: speed and memory do not depend on them),
saved once, and loaded back 4-bit through bitsandbytes, as a real checkpoint would be. Unsloth
and vLLM's CUDA wheels are too big to carry to the device machine, so the model is wrapped
with PEFT directly; `make run` on a GPU box uses Unsloth over the same TRL arguments.

Usage (device): `python bench/gpu/qlora.py [--shape 8b] [--steps 30]`; `--tiny` is a seconds-long
smoke run. On a CPU (`--tiny --no-4bit`) it gets as far as the first step: TRL's fused LM head
is a Triton kernel, which needs a GPU (the real CPU path goes through Unsloth's trainer).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training.hyperparameters import Hyperparameters  # noqa: E402
from training.trainer import Device, RunConfig, _common_args  # noqa: E402

SHAPES = {  # Llama-3.1-8B's and Llama-3.2-1B's shapes; `tiny` for a CPU check of the script
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512},
}


def build_base(shape: str, directory: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    del model
    torch.cuda.empty_cache() if device == "cuda" else None


def tokenizer(vocab_size: int) -> object:
    """A stand-in tokenizer (the rows are token ids already; TRL wants one for padding)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    return PreTrainedTokenizerFast(tokenizer_object=words, pad_token="t0", eos_token="t1",
                                   unk_token="t0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--no-4bit", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="--shape tiny, 4 steps, short rows")
    args = parser.parse_args()
    if args.tiny:
        args.shape, args.steps, args.batch_size, args.seq_length = "tiny", 4, 2, 32

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    device = Device.detect()
    work = Path(tempfile.mkdtemp(prefix="qlora-bench-"))
    started = time.perf_counter()
    build_base(args.shape, work / "base")
    built = time.perf_counter() - started

    quantization = None if args.no_4bit else BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if device.bf16 else torch.float16)
    model = AutoModelForCausalLM.from_pretrained(
        work / "base", quantization_config=quantization,
        dtype=torch.bfloat16 if device.bf16 else torch.float32,
        device_map={"": 0} if device.cuda else None)
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    hp = Hyperparameters(n_epochs=1, batch_size=args.batch_size, learning_rate_multiplier=1.0,
                         learning_rate=2e-4, use_qlora=quantization is not None,
                         max_seq_length=args.seq_length)
    model = get_peft_model(model, LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha,
                                             target_modules=hp.target_modules,
                                             task_type="CAUSAL_LM"))
    vocab = SHAPES[args.shape]["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(10, vocab, (args.seq_length,),
                                        generator=generator).tolist()}
            for _ in range(args.steps * args.batch_size)]

    timings: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a: object, **k: object) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: object, **k: object) -> None:
            if device.cuda:
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - self.t)

    cfg = RunConfig(method="supervised", model_dir=work / "base", output_dir=work / "out",
                    hyperparameters=hp, seed=0)
    common = _common_args(cfg, has_eval=False, device=device)
    common.update(save_strategy="no", max_steps=args.steps, gradient_checkpointing=True)
    trainer = SFTTrainer(model=model, args=SFTConfig(**common), processing_class=tokenizer(vocab),
                         train_dataset=Dataset.from_list(rows), callbacks=[StepClock()])
    if device.cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steady = timings[len(timings) // 3:] or timings  # the first steps warm kernels up
    tokens_per_step = args.batch_size * args.seq_length
    print(json.dumps({
        "shape": args.shape, "4bit": quantization is not None, "device": (
            torch.cuda.get_device_name(0) if device.cuda else "cpu"),
        "optim": common["optim"], "bf16": common["bf16"], "steps": len(timings),
        "batch_size": args.batch_size, "seq_length": args.seq_length,
        "seconds_per_step": round(sum(steady) / len(steady), 4),
        "tokens_per_second": round(tokens_per_step * len(steady) / sum(steady), 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.cuda else None,
        "base_build_seconds": round(built, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
