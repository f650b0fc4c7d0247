"""The Tinker API's training speed against tuneserve's own SFT job, side by side in one run,
and the time from `save_weights_for_sampler` to the first sampled token.

The same examples, model, LoRA rank, batch size and epochs both ways: the job through
`/v1/fine_tuning/jobs` (created to succeeded), the Tinker run through the official SDK
(`create_lora_training_client` to its last `optim_step` answer, one forward_backward +
optim_step a batch, submitted ahead as the cookbook's loops do). Each side's tokens/s is its
own count of trained tokens over its wall time; the ratio is Tinker's over the job's (goal
>= 0.9). Usage: `python bench/tinker_api.py [--examples 64] [--rounds 1]` (not
`bench/tinker.py`: a script of that name would shadow the SDK's package).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tinker  # noqa: E402

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from tests.support.chat import wait_for_engine  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import jsonl, sft_example  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402

EPOCHS, BATCH, RANK, SEED, LR_MULTIPLIER = 1, 4, 8, 11, 1.0


def datums(model_dir: Path, records: list[dict]) -> list[tinker.Datum]:  # type: ignore[type-arg]
    """Each conversation as the job trains it: the chat template's tokens, loss on the
    assistant's answer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    out = []
    for record in records:
        def ids(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        prompt = ids(tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False,
                                                   add_generation_prompt=True))
        full = ids(tokenizer.apply_chat_template(record["messages"], tokenize=False))
        weights = [0.0] * (len(prompt) - 1) + [1.0] * (len(full) - len(prompt))
        out.append(tinker.Datum(
            model_input=tinker.ModelInput.from_ints(full[:-1]),
            loss_fn_inputs={"target_tokens": tinker.TensorData(data=full[1:], dtype="int64"),
                            "weights": tinker.TensorData(data=weights, dtype="float32")}))
    return out


def job(server: TuneserveServer, payload: bytes) -> tuple[float, int]:
    client = server.client()
    t = time.perf_counter()
    training = client.files.create(file=("bench.jsonl", payload), purpose="fine-tune").id
    created = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL, training_file=training, seed=SEED,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": EPOCHS, "batch_size": BATCH, "lora_rank": RANK,
            "learning_rate_multiplier": LR_MULTIPLIER}}})
    while (done := client.fine_tuning.jobs.retrieve(created.id)).status not in (
            "succeeded", "failed", "cancelled"):
        time.sleep(0.2)
    if done.status != "succeeded":
        raise SystemExit(f"job {done.id} {done.status}: {done.error}")
    return time.perf_counter() - t, done.trained_tokens or 0


def tinker_run(base_url: str, data: list[tinker.Datum]) -> tuple[float, int, tinker.TrainingClient,
                                                                   tinker.ServiceClient]:
    client = tinker.ServiceClient(base_url=base_url)
    t = time.perf_counter()
    training = client.create_lora_training_client(base_model=DEFAULT_BASE_MODEL,
                                                  rank=RANK).result()
    batches = [data[i:i + BATCH] for _ in range(EPOCHS) for i in range(0, len(data), BATCH)]
    # The first batch alone: past it the trainer is loaded, and the rest is steady training.
    training.forward_backward(batches[0], "cross_entropy")
    training.optim_step(tinker.AdamParams(learning_rate=1e-4)).result()
    warm = time.perf_counter()
    last = None
    for batch in batches[1:]:
        training.forward_backward(batch, "cross_entropy")
        last = training.optim_step(tinker.AdamParams(learning_rate=1e-4))
    assert last is not None
    last.result()
    end = time.perf_counter()
    steady = sum(d.model_input.length for batch in batches[1:] for d in batch)
    print(f"  Tinker steady (after its first batch): {steady / (end - warm):6.1f} tok/s; "
          f"create_model to the first batch's optim_step {warm - t:.1f} s")
    tokens = sum(d.model_input.length for batch in batches for d in batch)
    return end - t, tokens, training, client


def first_token(client: tinker.ServiceClient, training: tinker.TrainingClient,
                name: str) -> float:
    """From asking to save the weights for the sampler to the first sampled token."""
    t = time.perf_counter()
    path = training.save_weights_for_sampler(name).result().path
    sampler = client.create_sampling_client(model_path=path).result()
    sampler.sample(tinker.ModelInput.from_ints([1, 2, 3]), 1,
                   tinker.SamplingParams(max_tokens=1, temperature=0.0)).result()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    os.environ["TINKER_TELEMETRY"] = "0"
    models = ROOT / "data" / "models"
    model_dir = prepare_default_model(models / DEFAULT_BASE_MODEL)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-tinker-"))
    records = [sft_example(i) for i in range(args.examples)]
    data = datums(model_dir, records)
    server = TuneserveServer(work / "tuneserve", {"TUNESERVE_MODELS_DIR": str(models),
                                                  "TUNESERVE_SERVING_ENABLED": "true"}).start()
    try:
        wait_for_engine(server)
        os.environ["TINKER_API_KEY"] = server.cli("keys", "create", "--project", "bench",
                                                  "--tinker").strip()
        base_url = server.base_url.removesuffix("/v1")
        job(server, jsonl(records[:10]))  # warm: the API loads its tokenizer once
        for r in range(args.rounds):
            t_job, job_tokens = job(server, jsonl(records))
            t_tinker, tinker_tokens, training, client = tinker_run(base_url, data)
            swaps = [first_token(client, training, f"bench-{r}-{i}") for i in range(3)]
            client.close("success").result()
            ratio = (tinker_tokens / t_tinker) / (job_tokens / t_job)
            print(f"round {r}: {len(data)} examples x {EPOCHS} epoch, batch {BATCH}   "
                  f"SFT job {t_job:6.1f} s ({job_tokens} tok, {job_tokens / t_job:6.1f} tok/s)"
                  f"   Tinker {t_tinker:6.1f} s ({tinker_tokens} tok, "
                  f"{tinker_tokens / t_tinker:6.1f} tok/s)   ratio {ratio:.3f}   "
                  f"save_weights_for_sampler -> first token "
                  f"{', '.join(f'{s:.2f}' for s in swaps)} s")
    finally:
        server.stop()
    print(json.dumps({"goal": "ratio >= 0.9; first token <= 1 s",
                      "note": "Tinker tokens/s over the SFT job's tokens/s, same data and model"}))


if __name__ == "__main__":
    main()
