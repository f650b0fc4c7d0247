"""Helpers for tests that talk to the shared vLLM engine."""

import time

import httpx
import psutil

from tests.support.server import TuneserveServer


def wait_for_engine(server: TuneserveServer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    url = server.base_url.removesuffix("/v1") + "/health"
    while httpx.get(url, timeout=5).json().get("engine") != "ready":
        if time.monotonic() > deadline:
            raise AssertionError("the vLLM engine did not become ready:\n"
                                 + (server.data_dir / "logs" / "vllm.log").read_text()[-3000:])
        time.sleep(0.5)


def engine_process(server: TuneserveServer) -> psutil.Process:
    """The vLLM server process the tuneserve server manages."""
    for proc in psutil.Process(server.proc.pid).children(recursive=False):  # type: ignore[union-attr]
        if "vllm.entrypoints.openai.api_server" in " ".join(proc.cmdline()):
            return proc
    raise AssertionError("no vLLM process under the server")


def engine_url(server: TuneserveServer) -> str:
    cmd = engine_process(server).cmdline()
    return f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"


def running_requests(server: TuneserveServer) -> float:
    text = httpx.get(engine_url(server) + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))
