"""Jobs through the Ray executor on simulated GPU nodes (a loopback Ray cluster whose nodes
declare logical GPUs), side by side with Ray's own cost in one run:

1. Overhead: tiny jobs one at a time, `jobs.create` -> the job's Ray job RUNNING (validation,
   claim, submit, placement) next to Ray's own submit -> RUNNING for a no-op entrypoint on the
   same cluster; and `succeeded` -> first streamed token of the new model.
2. Many jobs created at once across two API nodes (two schedulers) on one PostgreSQL: every
   job must run exactly once (Ray's job list is watched throughout).

Usage: `python bench/job_queue.py [--jobs 40] [--sequential 5] [--gpu-nodes 2]`.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from storage.ids import random_token  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.chat import wait_for_engine  # noqa: E402
from tests.support.ray_cluster import RayCluster  # noqa: E402
from tests.support.seaweedfs import SeaweedFS  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import sft_example, upload, wait_for  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402


class RunningSince:
    """First moment each Ray job was seen RUNNING, and every job Ray held."""

    def __init__(self, cluster: RayCluster) -> None:
        self.client = cluster.client()
        self.running: dict[str, float] = {}
        self.jobs: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.perf_counter()
            try:
                listing = self.client.list_jobs()
            except Exception:  # a slow dashboard under load: look again
                continue
            for job in listing:
                self.jobs[job.submission_id] = job.metadata or {}
                if job.status.value == "RUNNING":
                    self.running.setdefault(job.submission_id, now)

    def of(self, job_id: str) -> list[str]:
        return [s for s, m in self.jobs.items() if m.get("tuneserve_job") == job_id]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ray_noop(cluster: RayCluster, n: int) -> list[float]:
    client = cluster.client()
    out = []
    for i in range(n):
        t = time.perf_counter()
        sid = client.submit_job(entrypoint="python -c pass", entrypoint_num_gpus=1,
                                submission_id=f"noop-{random_token(6)}-{i}")
        while client.get_job_status(sid).value == "PENDING":
            time.sleep(0.02)
        out.append(time.perf_counter() - t)
        while not client.get_job_status(sid).is_terminal():
            time.sleep(0.05)
        client.delete_job(sid)
    return out


def tiny_job(server: TuneserveServer, training: str) -> str:
    return server.client().fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL, training_file=training, seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 10, "use_qlora": False}}}).id


def first_token(server: TuneserveServer, model: str) -> float:
    t = time.perf_counter()
    stream = server.client().chat.completions.create(
        model=model, max_tokens=4, stream=True,
        messages=[{"role": "user", "content": "What is 1 plus 1?"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    return time.perf_counter() - t


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--sequential", type=int, default=5)
    parser.add_argument("--gpu-nodes", type=int, default=2)
    args = parser.parse_args()

    models = ROOT / "data" / "models"
    prepare_default_model(models / DEFAULT_BASE_MODEL)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-queue-"))
    s3 = SeaweedFS().start()
    db_name, db_url = postgres.create_database()
    storage = {**s3.env("bench-queue", random_token(8)), "TUNESERVE_DATABASE_URL": db_url,
               "TUNESERVE_MODELS_DIR": str(models)}
    cluster = RayCluster(storage, gpu_nodes=args.gpu_nodes).start()
    env = {**storage, "TUNESERVE_EXECUTOR": "ray", "TUNESERVE_RAY_ADDRESS": cluster.address,
           "TUNESERVE_RAY_WORKER_COMMAND": f"{sys.executable} -m training.worker"}
    a = TuneserveServer(work / "a", env | {"TUNESERVE_SERVING_ENABLED": "true"})
    b = TuneserveServer(work / "b", env, api_key=a.api_key)
    watcher = None
    try:
        a.start()
        b.start()
        training = upload(a.client(), [sft_example(i) for i in range(10)])
        noop = ray_noop(cluster, args.sequential)
        watcher = RunningSince(cluster)

        overhead, tokens = [], []
        for _ in range(args.sequential):
            t = time.perf_counter()
            job_id = tiny_job(a, training)
            while not (sids := watcher.of(job_id)) or sids[0] not in watcher.running:
                time.sleep(0.02)
            overhead.append(watcher.running[sids[0]] - t)
            done = wait_for(a.client(), job_id, timeout=600)
            assert done.status == "succeeded", done.error
            if not tokens:
                wait_for_engine(a)
            tokens.append(first_token(a, done.fine_tuned_model))  # type: ignore[arg-type]

        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda i: tiny_job((a, b)[i % 2], training), range(args.jobs)))
        done = [wait_for(b.client(), j, timeout=3600) for j in ids]
        wall = time.perf_counter() - t
        runs = {j: len(watcher.of(j)) for j in ids}
    finally:
        if watcher:
            watcher.stop()
        a.stop()
        b.stop()
        cluster.stop()
        s3.stop()
        postgres.drop_database(db_name)

    succeeded = sum(j.status == "succeeded" for j in done)
    duplicates = sum(n - 1 for n in runs.values() if n > 1)
    print(f"Ray no-op submit -> RUNNING: median {med(noop):.3f} s over {len(noop)}")
    print(f"tuneserve create -> Ray RUNNING: median {med(overhead):.3f} s over {len(overhead)}"
          f"   ratio {med(overhead) / med(noop):.2f}x Ray's own")
    print(f"succeeded -> first token: median {med(tokens):.3f} s "
          f"(first, with the engine warm: {tokens[0]:.3f} s)")
    print(f"{args.jobs} jobs at once over two API nodes: {succeeded} succeeded in {wall:.0f} s "
          f"on {args.gpu_nodes} simulated GPUs; Ray jobs per job: "
          f"{sorted(set(runs.values()))}; duplicate starts: {duplicates}")
    print(json.dumps({"overhead_ratio": round(med(overhead) / med(noop), 2),
                      "duplicate_starts": duplicates}))


if __name__ == "__main__":
    main()
