"""tuneserve as a user runs it: `tuneserve serve` in its own process, on a loopback port."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.tiers import refuse_in_fast_tier

ROOT = Path(__file__).resolve().parents[2]


class KeysFromCli:
    """The keys of a tuneserve as its operator sees them, through `tuneserve keys` (`cli`):
    a process's, or one in the test's process (tests/support/in_process.py)."""

    def cli(self, *args: str) -> str:
        raise NotImplementedError

    def api_keys(self) -> list[dict[str, str]]:
        """`tuneserve keys list` as rows: id, project_id, project, key (redacted), revoked
        ("yes" or "no") and job (its id, or "-")."""
        rows = []
        for line in self.cli("keys", "list").splitlines()[1:]:
            # CREATED and a REVOKED time are two words each: the JOB column is the last.
            words = line.split()
            rows.append({**dict(zip(("id", "project_id", "project", "key"), words[:4],
                                    strict=True)),
                         "revoked": "no" if words[6] == "-" else "yes", "job": words[-1]})
        return rows

    def other_key(self) -> str:
        """A key of a second project (made once per tuneserve)."""
        if not hasattr(self, "_other_key"):
            self._other_key = self.cli("keys", "create", "--project", "other-team").strip()
        return self._other_key


class TuneserveServer(KeysFromCli):
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 api_key: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        # API nodes sharing one DB share the key the first of them created.
        self.api_key = api_key or "sk-test-" + os.urandom(12).hex()
        self.env = {
            **os.environ,
            "TUNESERVE_DATA_DIR": str(data_dir),
            "TUNESERVE_BOOTSTRAP_API_KEY": self.api_key,
            # One vLLM engine is shared by the suite: only the server that asks gets one.
            "TUNESERVE_SERVING_ENABLED": "false",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        """Runs `tuneserve ARGS` against the same data; returns its stdout."""
        out = subprocess.run([sys.executable, "-m", "api.cli", *args], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"tuneserve {' '.join(args)} failed:\n{out.stderr}")
        return out.stdout

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The samples of its /metrics, by name and labels (see `metric`)."""
        text = httpx.get(self.base_url.removesuffix("/v1") + "/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def start(self, timeout: float = 60) -> "TuneserveServer":
        refuse_in_fast_tier("tuneserve server", "server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tuneserve did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.2)

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key or self.api_key, base_url=self.base_url,
                             max_retries=0, timeout=120)

    def http(self, api_key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=120,
                            headers={"Authorization": f"Bearer {api_key or self.api_key}"})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)  # it stops its vLLM engine and waits for it
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def metric(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    """One sample of `TuneserveServer.metrics()` (0 where it is not there yet)."""
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)
