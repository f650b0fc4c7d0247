"""Multi-turn training data, before and after one row per conversation, side by side in one run:
the same conversations (several trained assistant turns each) as TRL rows built the old way (a
prompt/completion row per trained assistant message, each repeating the conversation so far)
and the new way (one tokenized row per conversation, loss masked to its trained turns), one
epoch each on the default model. Prints rows, tokens fed to the model, wall time and the
conversations/s ratio.

Usage: `python bench/multiturn.py [--conversations 48] [--turns 4] [--batch-size 4]`.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from training.data import sft_dataset_rows, sft_rows  # noqa: E402
from training.hyperparameters import Hyperparameters  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402
from training.trainer import RunConfig, build_trainer, load_model  # noqa: E402


def conversation(i: int, turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a calculator."}]
    for t in range(turns):
        a, b = i + t, 3 * t + 1
        messages += [{"role": "user", "content": f"What is {a} times {b}?"},
                     {"role": "assistant", "content": json.dumps({"product": a * b})}]
    return {"messages": messages}


def train_once(rows: list[dict[str, Any]], batch_size: int, work: Path) -> float:
    hp = Hyperparameters(n_epochs=1, batch_size=batch_size, learning_rate_multiplier=1.0,
                         learning_rate=1e-3, use_qlora=False, max_seq_length=1024)
    cfg = RunConfig(method="supervised", model_dir=ROOT / "data" / "models" / DEFAULT_BASE_MODEL,
                    output_dir=work, hyperparameters=hp, seed=5)
    model, tokenizer = load_model(cfg)
    trainer = build_trainer(cfg, model, tokenizer, rows, [], [])
    trainer.args.save_strategy = "no"
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=48)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    model_dir = ROOT / "data" / "models" / DEFAULT_BASE_MODEL
    prepare_default_model(model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    records = [conversation(i, args.turns) for i in range(args.conversations)]
    before = [row for r in records for row in sft_rows(r)]
    after = sft_dataset_rows(records, tokenizer)

    def tokens_of_prompt_completion(row: dict[str, Any]) -> int:
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    before_tokens = sum(tokens_of_prompt_completion(r) for r in before)
    after_tokens = sum(len(r["input_ids"]) for r in after)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-multiturn-"))
    before_s = train_once(before, args.batch_size, work / "before")
    after_s = train_once(after, args.batch_size, work / "after")
    print(f"{args.conversations} conversations x {args.turns} trained turns, batch "
          f"{args.batch_size}, one epoch:")
    for name, rows, tokens, seconds in (("row per message", before, before_tokens, before_s),
                                        ("row per conversation", after, after_tokens, after_s)):
        print(f"  {name:21} {len(rows):4} rows {tokens:7} tokens {seconds:7.1f} s")
    print(f"  conversations/s ratio (after / before): {before_s / after_s:.2f}x")


if __name__ == "__main__":
    main()
