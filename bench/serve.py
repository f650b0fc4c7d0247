"""Serving benchmarks, each a ratio measured side by side in one run, on the real engine.

P1  aggregate output tokens/s with requests spread over 16 distinct adapters (more than
    `max_loras`, so adapters swap) vs the same load on one adapter (goal >= 0.90); also one
    adapter vs the base model alone, for the record.
P2  the same load through tuneserve vs straight to the vLLM subprocess: throughput ratio
    (goal >= 0.97) and added median time to first token (goal <= 3 ms), against what a bare
    ASGI pass-through (bench/passthrough.py) adds in front of the same engine in the same run
    (goal: tuneserve's added TTFT <= 1.5x the pass-through's). `--database postgresql` runs
    tuneserve on PostgreSQL (where the 3 ms goal is set) instead of SQLite.
P3  seconds from a job's `succeeded` to the first token from its model (goal <= 2 s).

Usage: `python bench/serve.py [--requests 32] [--concurrency 8] [--tokens 48]
[--ttft-samples 20] [--only p2] [--database postgresql]`.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from storage.blob import LocalBlobStore  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.keys import adapter_prefix  # noqa: E402
from storage.models import FineTunedModel  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.chat import engine_socket, wait_for_engine  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import sft_example, upload, wait_for  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402

BASE = DEFAULT_BASE_MODEL
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
# SmolLM2's end tokens banned (OpenAI's logit_bias; tenants may not set vLLM's min_tokens),
# so every answer is exactly max_tokens long.
NO_END = {"0": -100, "1": -100, "2": -100}


async def one(client: openai.AsyncOpenAI, model: str, tokens: int) -> tuple[int, float]:
    """Streams one answer of exactly `tokens` tokens; returns (tokens, time to first token)."""
    t = time.perf_counter()
    first = None
    count = 0
    stream = await client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, logit_bias=NO_END)
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t
        if chunk.usage:
            count = chunk.usage.completion_tokens
    return count, first or 0.0


async def load(client: openai.AsyncOpenAI, models: list[str], requests: int, concurrency: int,
               tokens: int) -> tuple[float, list[float]]:
    """Output tokens/s of `requests` answers, `concurrency` at a time, models round-robin."""
    gate = asyncio.Semaphore(concurrency)

    async def run(i: int) -> tuple[int, float]:
        async with gate:
            return await one(client, models[i % len(models)], tokens)

    t = time.perf_counter()
    results = await asyncio.gather(*(run(i) for i in range(requests)))
    elapsed = time.perf_counter() - t
    return sum(n for n, _ in results) / elapsed, [f for _, f in results]


def start_passthrough(socket: str, engine_key: str) -> tuple[subprocess.Popen[bytes], str]:
    """bench/passthrough.py under uvicorn, in front of the engine; returns it and its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.passthrough:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=os.environ | {"PASSTHROUGH_UDS": socket, "PASSTHROUGH_KEY": engine_key})
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the pass-through did not start") from None
            time.sleep(0.2)


def clone_adapters(server: TuneserveServer, source: str, project_id: str, n: int) -> list[str]:
    """`n` distinct adapters made from a trained one by perturbing its LoRA B matrices, and
    registered as the project's models (a benchmark fixture: training 16 jobs on a CPU would
    take most of the run)."""
    store = LocalBlobStore(server.data_dir / "blobs")
    db = Database(server.env.get("TUNESERVE_DATABASE_URL")
                  or f"sqlite:///{server.data_dir / 'tuneserve.db'}")
    with db.session() as s:
        src_prefix = s.scalar(select(FineTunedModel.adapter_prefix).where(
            FineTunedModel.id == source))
    assert src_prefix is not None, source
    work = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    files = store.download_prefix(src_prefix, work / "src")
    names = []
    for i in range(n):
        name = f"{source[: source.rfind(':')]}:bench{i:02d}"
        prefix = adapter_prefix(project_id, f"bench{i:02d}")
        for f in files:
            if f.name == "adapter_model.safetensors":
                weights = load_file(f)
                gen = torch.Generator().manual_seed(i)
                for key, value in weights.items():
                    if "lora_B" in key:
                        noise = torch.randn(value.shape, generator=gen, dtype=torch.float32)
                        weights[key] = (value.float() + 1e-3 * noise).to(value.dtype)
                out = work / f"w{i}.safetensors"
                save_file(weights, out)
                store.put(prefix + f.name, out.read_bytes())
            else:
                store.put(prefix + f.name, f.read_bytes())
        with db.session() as s:
            s.add(FineTunedModel(id=name, project_id=project_id, job_id="bench",
                                 base_model=BASE, adapter_prefix=prefix,
                                 created_at=int(time.time())))
        names.append(name)
    db.dispose()
    return names


async def main_async(args: argparse.Namespace) -> None:
    models = ROOT / "data" / "models"
    prepare_default_model(models / BASE)
    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-serve-"))
    env = {"TUNESERVE_MODELS_DIR": str(models), "TUNESERVE_SERVING_ENABLED": "true"}
    db_name = None
    if args.database == "postgresql":
        db_name, env["TUNESERVE_DATABASE_URL"] = postgres.create_database()
    server = TuneserveServer(work / "tuneserve", env).start()
    passthrough_proc = None
    try:
        wait_for_engine(server)
        sync = server.client()
        client = openai.AsyncOpenAI(api_key=server.api_key, base_url=server.base_url,
                                    max_retries=0, timeout=600)
        socket, engine_key = engine_socket(server)
        direct = openai.AsyncOpenAI(api_key=engine_key, base_url="http://vllm/v1",
                                    http_client=httpx.AsyncClient(
                                        transport=httpx.AsyncHTTPTransport(uds=socket)),
                                    max_retries=0, timeout=600)
        passthrough_proc, passthrough_url = start_passthrough(socket, engine_key)
        passthrough = openai.AsyncOpenAI(api_key="-", base_url=passthrough_url, max_retries=0,
                                         timeout=600)

        if args.only == "p2":
            await load(client, [BASE], c := args.concurrency, c, 4)  # warm every path
            await load(direct, [BASE], c, c, 4)
            await load(passthrough, [BASE], c, c, 4)
            proxy_tps, _ = await load(client, [BASE], args.requests, c, args.tokens)
            direct_tps, _ = await load(direct, [BASE], args.requests, c, args.tokens)
        else:
            # P3: a real job; the clock starts when the client sees `succeeded`.
            job = sync.fine_tuning.jobs.create(
                model=BASE, training_file=upload(sync, [sft_example(i) for i in range(12)]),
                method={"type": "supervised", "supervised": {"hyperparameters": {
                    "n_epochs": 1, "batch_size": 4}}})
            while (job := sync.fine_tuning.jobs.retrieve(job.id)).status not in (
                    "succeeded", "failed", "cancelled"):
                await asyncio.sleep(0.05)
            seen = time.perf_counter()
            assert job.status == "succeeded", job.error
            _, _ = await one(client, job.fine_tuned_model, 1)
            p3 = time.perf_counter() - seen
            wait_for(sync, job.id)

            adapters = clone_adapters(server, job.fine_tuned_model, job.organization_id, 16)
            n, c, k = args.requests, args.concurrency, args.tokens
            # Warm every path once so registration and first-use costs are not in the ratios.
            await load(client, [BASE, *adapters], 17, c, 4)
            await load(direct, [BASE], c, c, 4)

            base_tps, _ = await load(client, [BASE], n, c, k)
            one_tps, _ = await load(client, adapters[:1], n, c, k)
            many_tps, _ = await load(client, adapters, n, c, k)
            # As many adapters as the engine has LoRA slots: separates slot swapping from the
            # cost of mixing adapters in one batch.
            slots_tps, _ = await load(client, adapters[:8], n, c, k)
            proxy_tps, _ = await load(client, [BASE], n, c, k)
            direct_tps, _ = await load(direct, [BASE], n, c, k)
            await load(passthrough, [BASE], c, c, 4)
        passthrough_tps, _ = await load(passthrough, [BASE], args.requests, args.concurrency,
                                        args.tokens)
        # Interleaved, so a drift in the machine's load falls on all three alike.
        ttft_proxy, ttft_direct, ttft_pass = [], [], []
        for _ in range(args.ttft_samples):
            ttft_direct.append((await one(direct, BASE, 2))[1])
            ttft_pass.append((await one(passthrough, BASE, 2))[1])
            ttft_proxy.append((await one(client, BASE, 2))[1])
        direct_ms = statistics.median(ttft_direct) * 1000
        added_ms = statistics.median(ttft_proxy) * 1000 - direct_ms
        pass_ms = statistics.median(ttft_pass) * 1000 - direct_ms

        if args.only != "p2":
            print(f"P1 16 adapters vs 1 adapter: {many_tps:.1f} / {one_tps:.1f} tok/s = "
                  f"{many_tps / one_tps:.3f} (goal >= 0.90)")
            print(f"   8 adapters (= max_loras, no slot swaps) vs 1 adapter: {slots_tps:.1f} / "
                  f"{one_tps:.1f} tok/s = {slots_tps / one_tps:.3f} (diagnostic)")
            print(f"   1 adapter vs base model:  {one_tps:.1f} / {base_tps:.1f} tok/s = "
                  f"{one_tps / base_tps:.3f} (for the record)")
        print(f"P2 through tuneserve vs direct to vLLM: {proxy_tps:.1f} / {direct_tps:.1f} tok/s "
              f"= {proxy_tps / direct_tps:.3f} (goal >= 0.97); added median TTFT "
              f"{added_ms:.2f} ms (goal <= 3 ms; medians {statistics.median(ttft_proxy)*1000:.1f}"
              f" vs {direct_ms:.1f} ms; {args.database})")
        print(f"   bare ASGI pass-through vs direct: {passthrough_tps:.1f} / {direct_tps:.1f} "
              f"tok/s; added median TTFT {pass_ms:.2f} ms; tuneserve / pass-through added "
              f"TTFT = {added_ms / pass_ms if pass_ms > 0 else float('inf'):.2f}x (goal <= 1.5x)")
        if args.only != "p2":
            print(f"P3 job succeeded -> first token from its model: {p3:.2f} s (goal <= 2 s)")
        await client.close()
        await direct.close()
        await passthrough.close()
    finally:
        if passthrough_proc is not None:
            passthrough_proc.kill()
        server.stop()
        if db_name:
            postgres.drop_database(db_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--ttft-samples", type=int, default=20)
    # P2 alone: no training job, no adapters (for profiling the proxy's own cost).
    parser.add_argument("--only", choices=["all", "p2"], default="all")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
