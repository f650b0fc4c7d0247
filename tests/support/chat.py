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


def engine_socket(server: TuneserveServer) -> tuple[str, str]:
    """The managed vLLM's unix socket and its current key (tests read them as root can)."""
    proc = engine_process(server)
    cmd = proc.cmdline()
    return cmd[cmd.index("--uds") + 1], proc.environ()["VLLM_API_KEY"]


def engine_http(server: TuneserveServer, key: bool = True) -> httpx.Client:
    """A client straight to the managed vLLM, past tuneserve: with its key, or without."""
    path, api_key = engine_socket(server)
    return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://vllm",
                        timeout=30,
                        headers={"Authorization": f"Bearer {api_key}"} if key else {})


def engine_metric(server: TuneserveServer, name: str) -> float:
    """The sum of one of vLLM's own metrics over its label sets."""
    with engine_http(server) as http:
        text = http.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.split("{")[0].split(" ")[0] == name)


def running_requests(server: TuneserveServer) -> float:
    return engine_metric(server, "vllm:num_requests_running")


def served_metric(server: TuneserveServer, name: str, labels: str = "") -> float:
    """One of tuneserve's own /metrics figures, summed over the series whose labels contain
    `labels`."""
    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.split("{")[0].split(" ")[0] == name and labels in line)
