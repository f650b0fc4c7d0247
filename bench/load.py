"""One node under mixed load for a while: 64 concurrent chat streams, 8 concurrent uploads
(each read back and compared), and fine-tuning jobs created and cancelled one after another,
all through the official client against the embedded defaults (SQLite, local blobs, the
managed vLLM).

Prints, per kind, how many finished, how many failed (goal: none) and p50/p99 latency (for
chats also time to first token), every upload's read-back check, and the API server's peak
RSS (its own process; vLLM and workers apart). Usage: `python bench/load.py [--seconds 60]
[--streams 64] [--uploads 8]`.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import openai
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from tests.support.chat import wait_for_engine  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import jsonl, sft_example  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.first_tokens: list[float] = []
        self.errors: list[str] = []

    def line(self, name: str) -> str:
        def pct(values: list[float], q: float) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"

        text = (f"{name:8} done {len(self.latencies):5d}  errors {len(self.errors):3d}  "
                f"p50 {pct(self.latencies, 0.5):>8}  p99 {pct(self.latencies, 0.99):>8}")
        if self.first_tokens:
            text += (f"  TTFT p50 {pct(self.first_tokens, 0.5):>7}"
                     f" p99 {pct(self.first_tokens, 0.99):>7}")
        return text


async def chats(client: openai.AsyncOpenAI, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        started, first = time.perf_counter(), None
        try:
            stream = await client.chat.completions.create(
                model=DEFAULT_BASE_MODEL, max_tokens=16, stream=True,
                messages=[{"role": "user", "content": "Name three colours."}])
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
        except openai.APIError as exc:
            tally.errors.append(repr(exc))
            continue
        tally.latencies.append(time.perf_counter() - started)
        if first is not None:
            tally.first_tokens.append(first)


async def uploads(client: openai.AsyncOpenAI, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        data = os.urandom(int.from_bytes(os.urandom(2)) * 32 + 256 * 1024)  # 256 KiB..2.3 MiB
        started = time.perf_counter()
        try:
            created = await client.files.create(file=("load.bin", data), purpose="batch")
            back = await (await client.files.content(created.id)).aread()
        except openai.APIError as exc:
            tally.errors.append(repr(exc))
            continue
        if back != data:
            tally.errors.append(f"{created.id} read back differs")
        tally.latencies.append(time.perf_counter() - started)
        await client.files.delete(created.id)


async def jobs(client: openai.AsyncOpenAI, until: float, tally: Tally) -> None:
    training = await client.files.create(
        file=("train.jsonl", jsonl([sft_example(i) for i in range(12)])), purpose="fine-tune")
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            job = await client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL,
                                                       training_file=training.id)
            await asyncio.sleep(2)
            await client.fine_tuning.jobs.cancel(job.id)
            while (job := await client.fine_tuning.jobs.retrieve(job.id)).status not in (
                    "cancelled", "succeeded", "failed"):
                await asyncio.sleep(0.5)
        except openai.APIError as exc:
            tally.errors.append(repr(exc))
            continue
        if job.status != "cancelled":
            tally.errors.append(f"{job.id} ended {job.status}")
        tally.latencies.append(time.perf_counter() - started)


async def peak_rss(pid: int, until: float) -> int:
    proc, peak = psutil.Process(pid), 0
    while time.monotonic() < until:
        peak = max(peak, proc.memory_info().rss)
        await asyncio.sleep(0.05)
    return peak


async def main_async(args: argparse.Namespace) -> None:
    models = ROOT / "data" / "models"
    prepare_default_model(models / DEFAULT_BASE_MODEL)
    server = TuneserveServer(Path(tempfile.mkdtemp(prefix="tuneserve-bench-load-")), {
        "TUNESERVE_MODELS_DIR": str(models), "TUNESERVE_SERVING_ENABLED": "true"}).start()
    try:
        wait_for_engine(server)
        client = openai.AsyncOpenAI(api_key=server.api_key, base_url=server.base_url,
                                    max_retries=0, timeout=300)
        before = psutil.Process(server.proc.pid).memory_info().rss
        until = time.monotonic() + args.seconds
        tallies = {"chat": Tally(), "upload": Tally(), "job": Tally()}
        work = ([chats(client, until, tallies["chat"]) for _ in range(args.streams)]
                + [uploads(client, until, tallies["upload"]) for _ in range(args.uploads)]
                + [jobs(client, until, tallies["job"])])
        peak, *_ = await asyncio.gather(peak_rss(server.proc.pid, until), *work)
        await client.close()
    finally:
        server.stop()
    print(f"{args.seconds} s: {args.streams} chat streams, {args.uploads} uploads, "
          "jobs created and cancelled, at once")
    for name, tally in tallies.items():
        print(tally.line(name))
        for error in tally.errors[:5]:
            print(f"   {error}")
    print(f"API server RSS: {before / 2**20:.0f} MiB at the start, peak "
          f"{peak / 2**20:.0f} MiB; total errors "
          f"{sum(len(t.errors) for t in tallies.values())}")
    if any(t.errors for t in tallies.values()):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--uploads", type=int, default=8)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
