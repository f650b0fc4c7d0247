"""A 1 GiB file through `POST /v1/files` into SeaweedFS vs boto3 straight into the same
SeaweedFS, side by side in one run.

Prints the throughput ratio (goal >= 0.8) and the API server's RSS growth during the upload
(goal <= 64 MiB). Usage: `python bench/upload.py [--mib 1024] [--rounds 2]`.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from boto3.s3.transfer import TransferConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.seaweedfs import SeaweedFS  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402

BUCKET = "bench"


class PeakRSS:
    """Samples a process tree's RSS every 20 ms while running."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in [self.proc, *self.proc.children(recursive=True)])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, mib: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            # Vary each MiB a little so nothing along the way can deduplicate.
            f.write(i.to_bytes(8, "little") + block[8:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.mib << 20

    work = Path(tempfile.mkdtemp(prefix="tuneserve-bench-"))
    data = work / "payload.bin"
    make_file(data, args.mib)
    s3 = SeaweedFS().start()
    server = None
    try:
        env = s3.env(BUCKET, "api") | {"TUNESERVE_MAX_FILE_BYTES": str(size)}
        server = TuneserveServer(work / "tuneserve", env).start()
        client = server.client()
        boto = s3.client()
        # boto3's own managed transfer with its defaults: what a user would write by hand.
        transfer = TransferConfig()
        client.files.create(file=("warm.bin", b"warm-up"), purpose="user_data")

        direct, api, growth = [], [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            boto.upload_file(str(data), BUCKET, f"direct/{r}", Config=transfer)
            direct.append(time.perf_counter() - t)

            meter = PeakRSS(server.proc.pid)  # type: ignore[union-attr]
            before = meter.rss()
            with meter, open(data, "rb") as f:
                t = time.perf_counter()
                created = client.files.create(file=("payload.bin", f), purpose="user_data")
                api.append(time.perf_counter() - t)
            growth.append(meter.peak - before)
            assert created.bytes == size, created
            client.files.delete(created.id)
            boto.delete_object(Bucket=BUCKET, Key=f"direct/{r}")

        mb = size / 1e6
        for r in range(args.rounds):
            print(f"round {r}: boto3 direct {mb / direct[r]:7.1f} MB/s   through tuneserve "
                  f"{mb / api[r]:7.1f} MB/s   server RSS growth {growth[r] / (1 << 20):5.1f} MiB")
        ratio = min(direct) / min(api)
        print(f"throughput ratio (tuneserve / boto3 direct, best of {args.rounds}): {ratio:.2f} "
              f"(goal >= 0.80)")
        print(f"server RSS growth during upload (max): {max(growth) / (1 << 20):.1f} MiB "
              f"(goal <= 64 MiB)")
    finally:
        if server:
            server.stop()
        s3.stop()
        data.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
