"""The same SFT run as a tuneserve job (through the API: validation, queueing, storage,
events, checkpoints) and as a bare Unsloth + TRL script, side by side in one run.

Both count the same trained tokens, so the tokens/s ratio is the inverse ratio of wall
times (goal >= 0.95). Usage: `python bench/train.py [--examples 200] [--rounds 1]`.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import jsonl, sft_example  # noqa: E402
from training.hyperparameters import RULE_ALPHA, ModelShape, reference_learning_rate  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402


def base_learning_rate(model_dir: Path) -> float:
    """The rate the job resolves for this model at multiplier 1 (the bare run uses it too)."""
    config = json.loads((model_dir / "config.json").read_text())
    return reference_learning_rate("supervised", ModelShape.of(config), RULE_ALPHA)

EPOCHS, BATCH, LR_MULTIPLIER, SEED = 1, 4, 1.0, 11


def bare(model_dir: Path, data: Path, work: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "bench" / "bare_sft.py"), str(model_dir),
                    str(data), str(work / "bare"), str(EPOCHS), str(BATCH),
                    str(base_learning_rate(model_dir) * LR_MULTIPLIER), str(SEED)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def through_api(server: TuneserveServer, payload: bytes) -> tuple[float, int]:
    client = server.client()
    t = time.perf_counter()
    training = client.files.create(file=("bench.jsonl", payload), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL, training_file=training, seed=SEED,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": EPOCHS, "batch_size": BATCH,
            "learning_rate_multiplier": LR_MULTIPLIER}}},
    )
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
            "succeeded", "failed", "cancelled"):
        time.sleep(0.2)
    elapsed = time.perf_counter() - t
    if job.status != "succeeded":
        raise SystemExit(f"job {job.id} {job.status}: {job.error}")
    return elapsed, job.trained_tokens or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    models = ROOT / "data" / "models"
    model_dir = prepare_default_model(models / DEFAULT_BASE_MODEL)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-train-"))
    records = [sft_example(i) for i in range(args.examples)]
    payload = jsonl(records)
    data = work / "train.jsonl"
    data.write_bytes(payload)
    steps = -(-args.examples // BATCH) * EPOCHS

    server = TuneserveServer(work / "tuneserve", {"TUNESERVE_MODELS_DIR": str(models)}).start()
    try:
        through_api(server, jsonl(records[:10]))  # warm: the API loads its tokenizer once
        for r in range(args.rounds):
            t_bare = bare(model_dir, data, work)
            t_api, tokens = through_api(server, payload)
            print(f"round {r}: {steps} steps, {tokens} tokens   bare Unsloth+TRL {t_bare:6.1f} s "
                  f"({tokens / t_bare:6.1f} tok/s)   tuneserve job {t_api:6.1f} s "
                  f"({tokens / t_api:6.1f} tok/s)   ratio {t_bare / t_api:.3f}")
    finally:
        server.stop()
    print(json.dumps({"goal": ">= 0.95", "note": "tuneserve tokens/s over bare script tokens/s"}))


if __name__ == "__main__":
    main()
