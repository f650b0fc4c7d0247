"""Routing on real replicas: the consistent router, today's affinity router and round robin,
measured side by side in one run.

Two vLLM CPU replicas on a loopback Ray cluster (TUNESERVE_SERVING=ray), 64 adapters with
Zipf(1.1) popularity, 256 streamed requests, 8 at a time, through the official openai client.
The replicas are under adapter pressure: `--slots` adapters registered each (host memory:
vLLM's CPU LoRA cache), of which `--gpu-slots` in a batch (vLLM's `--max-loras`: the GPU
slots). Each policy starts from replicas that hold no adapter. Printed, per policy: where each
request found its adapter on the replica it was routed to (GPU slot, host memory, or cold: a
load), the loads ahead of requests (prefetches, the consistent router's), all loads against
the floor (the distinct adapters asked for: each needs one load at least), and p50/p95 time
to first token. `tests/test_route_sim.py` ties the simulator to these figures.

Usage: `python bench/route.py [--requests 256] [--adapters 64] [--slots 8] [--gpu-slots 2]`.
"""

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from storage.blob import open_blob_store  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.keys import adapter_prefix  # noqa: E402
from storage.models import FineTunedModel, Project, ServingReplica  # noqa: E402
from storage.settings import StorageSettings  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.chat import served_metric  # noqa: E402
from tests.support.ray_cluster import RayCluster, environment  # noqa: E402
from tests.support.seaweedfs import SeaweedFS  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402

BASE = DEFAULT_BASE_MODEL
PROMPT = [{"role": "user", "content": "Name three colours."}]
NO_END = {"0": -100, "1": -100, "2": -100}


def make_adapters(env: dict[str, str], project_id: str, count: int, work: Path) -> list[str]:
    """`count` distinct random LoRA adapters (rank 8) on the base, stored as the project's
    models: what matters to routing is that each is its own adapter, not what it learned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(Path(env["TUNESERVE_MODELS_DIR"]) / BASE,
                                                dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj"]))
    with environment(env):  # the S3 credentials
        store = open_blob_store(StorageSettings())
    db = Database(env["TUNESERVE_DATABASE_URL"])
    names = []
    for i in range(count):
        torch.manual_seed(i)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=1e-3)
        out = work / f"a{i}"
        model.save_pretrained(out)
        prefix = adapter_prefix(project_id, f"route{i:03d}")
        with environment(env):
            for f in out.iterdir():
                store.put(prefix + f.name, f.read_bytes())
        names.append(f"ft:{BASE}:default:route:{i:03d}")
        with db.session() as s:
            s.add(FineTunedModel(id=names[-1], project_id=project_id, job_id="bench",
                                 base_model=BASE, adapter_prefix=prefix,
                                 created_at=int(time.time())))
            s.commit()
    db.dispose()
    return names


def replicas(env: dict[str, str]) -> list[ServingReplica]:
    db = Database(env["TUNESERVE_DATABASE_URL"])
    with db.session() as s:
        rows = list(s.scalars(select(ServingReplica)))
        s.expunge_all()
    db.dispose()
    return rows


def unload_everything(env: dict[str, str]) -> None:
    """Each policy starts from replicas that hold no adapter."""
    for row in replicas(env):
        with httpx.Client(base_url=row.url, timeout=30,
                          headers={"Authorization": f"Bearer {row.api_key}"}) as http:
            for model in http.get("/v1/models").json()["data"]:
                if model["id"].startswith("lora-"):
                    http.post("/v1/unload_lora_adapter", json={"lora_name": model["id"]})


def zipf_sequence(names: list[str], n: int, alpha: float, seed: int) -> list[str]:
    weights = [1 / (rank + 1) ** alpha for rank in range(len(names))]
    return random.Random(seed).choices(names, weights, k=n)


async def run_load(server: TuneserveServer, sequence: list[str], concurrency: int,
                   tokens: int) -> list[float]:
    client = openai.AsyncOpenAI(api_key=server.api_key, base_url=server.base_url,
                                max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def one(model: str) -> float:
        async with gate:
            started = time.perf_counter()
            stream = await client.chat.completions.create(
                model=model, messages=PROMPT, max_tokens=tokens, logit_bias=NO_END,
                stream=True)
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            return first or 0.0

    try:
        return list(await asyncio.gather(*(one(m) for m in sequence)))
    finally:
        await client.close()


def decisions_by_tier(server: TuneserveServer) -> Counter[tuple[str, str]]:
    """tuneserve_routing_decisions_total by (action, tier)."""
    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    counts: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("tuneserve_routing_decisions_total{"):
            labels = dict(item.split("=", 1) for item in
                          line[line.index("{") + 1:line.index("}")].split(","))
            counts[(labels["action"].strip('"'), labels["tier"].strip('"'))] += int(
                float(line.rsplit(" ", 1)[1]))
    return counts


def api_node(work: Path, env: dict[str, str], cluster: RayCluster, policy: str,
             slots: int, gpu_slots: int, key: str | None) -> TuneserveServer:
    return TuneserveServer(work / f"api-{policy}", {
        **env, "TUNESERVE_SERVING_ENABLED": "true", "TUNESERVE_SERVING": "ray",
        "TUNESERVE_RAY_ADDRESS": cluster.address,
        "TUNESERVE_SERVED_MODELS": json.dumps([{"model": BASE, "min_replicas": 2,
                                                "max_replicas": 2}]),
        "TUNESERVE_RAY_GPUS_PER_REPLICA": "0",
        "TUNESERVE_RAY_REPLICA_RESOURCES": json.dumps({"vllm_replica": 1}),
        "TUNESERVE_RAY_SERVING_COMMAND": f"{sys.executable} -m serving.ray_replicas",
        "TUNESERVE_MAX_LOADED_ADAPTERS": str(slots),
        "TUNESERVE_MAX_CPU_LORAS": str(max(slots, gpu_slots)),
        "TUNESERVE_MAX_LORAS": str(gpu_slots),
        "TUNESERVE_ROUTING_POLICY": policy,
    }, api_key=key)


def wait_for_replicas(server: TuneserveServer, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    health = server.base_url.removesuffix("/v1") + "/health"
    while int(httpx.get(health, timeout=5).json().get("replicas", 0)) < count:
        if time.monotonic() > deadline:
            raise SystemExit("the replicas did not come up")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--adapters", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8,
                        help="adapters each replica keeps registered")
    parser.add_argument("--gpu-slots", type=int, default=2,
                        help="distinct adapters in a batch (vLLM's --max-loras)")
    parser.add_argument("--policies", default="consistent,affinity,round_robin")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=1.1)
    args = parser.parse_args()

    models = ROOT / "data" / "models"
    prepare_default_model(models / BASE)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-route-"))
    seaweed = SeaweedFS().start()
    db_name, url = postgres.create_database()
    env = {**seaweed.env("tuneserve-bench"), "TUNESERVE_DATABASE_URL": url,
           "TUNESERVE_MODELS_DIR": str(models)}
    cluster = RayCluster(env, gpu_nodes=0).start()
    cluster.add_nodes(2, {"vllm_replica": 1}, {"TUNESERVE_DATA_DIR": str(work / "nodes")})
    results: dict[str, Measured] = {}
    key = None
    sequence: list[str] = []
    try:
        for policy in args.policies.split(","):
            server = api_node(work, env, cluster, policy, args.slots, args.gpu_slots,
                              key).start()
            key = server.api_key
            try:
                wait_for_replicas(server, 2)
                db = Database(url)
                with db.session() as s:
                    project = s.scalar(select(Project).where(Project.name == "default"))
                    assert project is not None
                    project_id = project.id
                    have = s.scalar(select(FineTunedModel.id).limit(1))
                db.dispose()
                names = (make_adapters(env, project_id, args.adapters, work) if have is None
                         else [f"ft:{BASE}:default:route:{i:03d}" for i in range(args.adapters)])
                unload_everything(env)
                sequence = zipf_sequence(names, args.requests, args.alpha, seed=11)
                before = served_metric(server, "tuneserve_adapter_loads_total", "loaded")
                started = time.perf_counter()
                ttfts = asyncio.run(run_load(server, sequence, args.concurrency, args.tokens))
                elapsed = time.perf_counter() - started
                results[policy] = Measured(
                    loads=served_metric(server, "tuneserve_adapter_loads_total", "loaded")
                    - before,
                    prefetches=served_metric(server, "tuneserve_adapter_prefetches_total"),
                    decisions=decisions_by_tier(server), ttfts=ttfts, elapsed=elapsed)
                print(f"{policy}: {dict(results[policy].decisions)}", flush=True)
            finally:
                server.stop()
    finally:
        cluster.stop()
        seaweed.stop()
        postgres.drop_database(db_name)

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    floor = len(set(sequence))
    print(f"2 replicas, {args.adapters} adapters, Zipf({args.alpha}), {args.requests} requests "
          f"x {args.tokens} tokens, {args.concurrency} at a time; per replica {args.slots} "
          f"adapters registered (host memory), {args.gpu_slots} in a batch (GPU slots); vLLM "
          f"CPU replicas stand in for GPU nodes. Floor: {floor} distinct adapters asked for, "
          "each needs one load at least.")
    print(f"  {'policy':12s} {'gpu':>5s} {'host':>5s} {'disk':>5s} {'cold':>5s} {'hit rate':>8s} "
          f"{'prefetch':>8s} {'loads':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'req/s':>6s}")
    for policy, m in results.items():
        print(f"  {policy:12s} {m.tier('gpu'):5d} {m.tier('host'):5d} {m.tier('disk'):5d} "
              f"{m.tier('cold'):5d} "
              f"{m.hit_rate:8.3f} {m.prefetches:8.0f} {m.loads:6.0f} {p(m.ttfts, 50):8.1f} "
              f"{p(m.ttfts, 95):8.1f} {args.requests / m.elapsed:6.1f}")
    if "round_robin" in results:
        rr = results["round_robin"]
        for policy, m in results.items():
            if policy != "round_robin":
                print(f"{policy} vs round robin: {rr.loads / max(m.loads, 1):.2f}x fewer loads "
                      f"(at the floor: {rr.loads / floor:.2f}x), p95 TTFT "
                      f"{p(m.ttfts, 95) / p(rr.ttfts, 95):.2f}x")


@dataclass
class Measured:
    loads: float  # every adapter load, prefetches included
    prefetches: float
    decisions: Counter[tuple[str, str]]  # (action, tier) -> requests
    ttfts: list[float]
    elapsed: float

    def tier(self, tier: str) -> int:
        return sum(n for (_, t), n in self.decisions.items() if t == tier)

    @property
    def hit_rate(self) -> float:
        """Requests whose adapter was in GPU slots or host memory where they were routed."""
        return (self.tier("gpu") + self.tier("host")) / max(1, sum(self.decisions.values()))


if __name__ == "__main__":
    main()
