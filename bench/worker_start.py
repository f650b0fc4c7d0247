"""Worker start: seconds from a job's `running` to its first training step, with workers
started cold (`TUNESERVE_WORKER_PRELOAD=false`: a fresh `python -m training.worker` imports
Unsloth, TRL, transformers and torch) and forked from the preloaded launcher, side by side in
one run on the default CPU model. Each server trains the same tiny job twice; the second job
is the one measured (on the preloading server, the first one starts cold while the launcher
imports).

Usage: `python bench/worker_start.py`
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import sft_example, upload  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402


def to_first_step(server: TuneserveServer) -> float:
    client = server.client()
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL,
        training_file=upload(client, [sft_example(i) for i in range(10)]),
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8}}})
    running = None
    while True:
        status = client.fine_tuning.jobs.retrieve(job.id).status
        if running is None and status == "running":
            running = time.perf_counter()
        if running is not None and any(
                e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id)):
            first = time.perf_counter() - running
            break
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"job {job.id} {status}")
        time.sleep(0.1)
    while client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed"):
        time.sleep(0.2)
    return first


def main() -> None:
    models = ROOT / "data" / "models"
    prepare_default_model(models / DEFAULT_BASE_MODEL)
    results = {}
    for preload in ("false", "true"):
        work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-worker-"))
        server = TuneserveServer(work, {"TUNESERVE_MODELS_DIR": str(models),
                                        "TUNESERVE_WORKER_PRELOAD": preload}).start()
        try:
            first = to_first_step(server)
            launcher_log = work / "logs" / "launcher.log"
            while preload == "true" and "launcher ready" not in (
                    launcher_log.read_text() if launcher_log.exists() else ""):
                time.sleep(0.5)
            results[preload] = (first, to_first_step(server))
        finally:
            server.stop()
    (cold1, cold), (_, warm) = results["false"], results["true"]
    print(f"running -> first step, cold worker: {cold:.1f} s (first job {cold1:.1f} s)")
    print(f"running -> first step, forked from the preloaded launcher: {warm:.1f} s")
    print(f"preloaded / cold: {warm / cold:.2f}")


if __name__ == "__main__":
    main()
