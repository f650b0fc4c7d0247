"""The vLLM engine as a managed subprocess: started, health-checked, restarted if it dies.
It listens on a unix socket in the data dir (0700) and asks every request for a key made anew
at each start: tuneserve is its only client, and no port is ever free for another process to
take first."""

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Protocol

import httpx
import psutil

from serving.settings import ServingSettings
from storage.base_models import BaseModelSpec
from storage.logs import rotate

log = logging.getLogger("tuneserve.engine")

# The engine's log (appended to at every start) is rotated past this size at a start.
ENGINE_LOG_MAX_BYTES = 64 << 20
# How long the warm-up completion at an engine's start may take before it is given up.
WARM_UP_SECONDS = 60.0


class EngineState(Enum):
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# A unix socket's path must fit in 108 bytes (sun_path).
_MAX_SOCKET_PATH = 100


def _socket_path(data_dir: Path) -> Path:
    path = data_dir.resolve() / "run" / "vllm.sock"
    if len(str(path)) > _MAX_SOCKET_PATH:
        # mkdtemp makes the directory 0700 too.
        path = Path(tempfile.mkdtemp(prefix="tuneserve-")) / "vllm.sock"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# The engine must not outlive tuneserve (a kill -9 of the API would leave gigabytes behind):
# PR_SET_PDEATHSIG survives exec, so a tiny launcher sets it and then becomes vLLM.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)  # the parent is already gone\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _die_with_parent() -> list[str]:
    if not sys.platform.startswith("linux"):
        return [sys.executable]
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid())]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


class EngineUnavailable(RuntimeError):
    """The engine is starting or restarting."""


class EngineTimeout(RuntimeError):
    """The engine took the request but did not answer within `engine_read_timeout`: it is
    alive (busy), so it is neither marked unreachable nor sent the request again."""


class Replica(Protocol):
    """One vLLM server for one base model, as routing and the proxy use it: the local engine
    below, or a replica on the cluster (`serving.remote`)."""

    name: str
    generation: int  # bumped at every (re)start: adapters it had registered are gone
    api_key: str
    ready: asyncio.Event
    http: httpx.AsyncClient  # pooled, with the replica's key
    # True: the replica fetches adapters from the blob store itself (`lora_path: blob:…`).
    fetches_adapters: bool
    # Such a replica's node's adapter cache on disk, and the adapters its vLLM has registered
    # (by any API node), as it last announced them; one that does not fetch reads the API
    # node's cache (`AdapterManager.cache`) and is registered by this node only.
    disk: frozenset[str]
    announced: frozenset[str]

    @property
    def base(self) -> str: ...

    async def wait_ready(self) -> None: ...

    def mark_unreachable(self) -> None: ...

    def note_answer(self) -> None: ...


def vllm_command(settings: ServingSettings, model: BaseModelSpec, listen: list[str],
                 cuda: bool | None = None) -> list[str]:
    """vLLM's OpenAI server for `model` with runtime LoRA loading, listening as `listen`
    says; `cuda`: None asks the machine (`nvidia-smi`)."""
    s = settings
    cuda = _has_cuda() if cuda is None else cuda
    # On a GPU vLLM takes the checkpoint's dtype (float16 where the GPU lacks bfloat16) and
    # this share of GPU memory for weights, activations and the KV cache; the CPU build
    # wants bfloat16 and sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (`vllm_environment`).
    device = (["--dtype", "auto", "--gpu-memory-utilization", str(s.gpu_memory_utilization)]
              if cuda else ["--dtype", "bfloat16"])
    # `tools` with `tool_choice: auto` need a parser for what the model writes.
    tools = (["--enable-auto-tool-choice", "--tool-call-parser", model.tool_parser]
             if model.tool_parser else [])
    return [
        *_die_with_parent(),
        "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model.path), "--served-model-name", model.name, *listen,
        "--enable-lora", "--max-lora-rank", str(s.max_lora_rank),
        "--max-loras", str(s.max_loras), "--max-cpu-loras", str(s.max_cpu_loras),
        "--max-model-len", str(s.max_model_len), *device, *tools,
        "--disable-uvicorn-access-log",
    ]


def vllm_environment(settings: ServingSettings, api_key: str,
                     cuda: bool | None = None) -> dict[str, str]:
    """`cuda` as in `vllm_command`. The key goes in the environment, which other users
    cannot read, not on the command line, which they can."""
    cuda = _has_cuda() if cuda is None else cuda
    env = dict(os.environ)
    env.update({
        "VLLM_API_KEY": api_key,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    })
    if not cuda:
        cores = os.cpu_count() or 1
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


async def send_with_retry(http: httpx.AsyncClient, request: httpx.Request,
                          stream: bool = False) -> httpx.Response:
    """Sends once more on a fresh connection if a pooled one turns out dead (the engine
    restarted behind it); the engine never saw the first attempt."""
    try:
        return await http.send(request, stream=stream)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError):
        return await http.send(request, stream=stream)


class VLLMEngine:
    """One vLLM OpenAI server for one base model, with runtime LoRA loading enabled: the local
    replica of that base model."""

    fetches_adapters = False
    disk: frozenset[str] = frozenset()
    announced: frozenset[str] = frozenset()

    def __init__(self, settings: ServingSettings, model: BaseModelSpec, *,
                 host: str | None = None, name: str = "local", extra_args: Sequence[str] = (),
                 extra_env: dict[str, str] | None = None,
                 on_healthy: Callable[[], Awaitable[None]] | None = None) -> None:
        """`host`: None listens on a unix socket in the data dir (the API node's own engine);
        an address listens there on a fresh port at each start (a replica on a cluster node,
        which the API nodes reach over the network). `on_healthy` runs after each passed
        health check."""
        self.settings = settings
        self.model = model
        self.name = name
        self.host = host
        self.port = 0
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.on_healthy = on_healthy
        self.socket_path = _socket_path(settings.data_dir) if host is None else None
        self.state = EngineState.DOWN
        # Bumped at every (re)start: adapters registered with an older process are gone.
        self.generation = 0
        self.restarts = 0  # for /metrics
        self.ready = asyncio.Event()
        # Made anew at each start; vLLM reads it from VLLM_API_KEY (not visible in `ps`).
        self.api_key = ""
        # Every request to the engine goes through this one pooled client.
        self.http = self._client(httpx.Timeout(None, connect=5,
                                               read=settings.engine_read_timeout))
        # When a proxied request last got an answer: a busy engine that is slow to answer a
        # probe is still alive (LoRAX counts inference the same way).
        self.last_answer = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.log_path = settings.data_dir.resolve() / "logs" / "vllm.log"
        # The process group of the vLLM this data dir last started: a supervisor that died
        # with SIGKILL (a replica's actor, say) leaves its engine core behind, gigabytes.
        self.group_file = settings.data_dir.resolve() / "run" / "vllm.pgid"

    @property
    def base(self) -> str:
        return self.model.name

    @property
    def url(self) -> str:
        return "http://vllm" if self.host is None else f"http://{self.host}:{self.port}"

    def _client(self, timeout: httpx.Timeout | float) -> httpx.AsyncClient:
        transport = (httpx.AsyncHTTPTransport(uds=str(self.socket_path)) if self.socket_path
                     else None)
        return httpx.AsyncClient(
            transport=transport, base_url=self.url, timeout=timeout,
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256))

    def command(self, cuda: bool | None = None) -> list[str]:
        """`cuda`: None asks the machine (`nvidia-smi`); tests pass it to check both paths."""
        listen = (["--uds", str(self.socket_path)] if self.socket_path
                  else ["--host", str(self.host), "--port", str(self.port)])
        return vllm_command(self.settings, self.model, [*listen, *self.extra_args], cuda)

    def environment(self, cuda: bool | None = None) -> dict[str, str]:
        """`cuda` as in `command`."""
        return {**vllm_environment(self.settings, self.api_key, cuda), **self.extra_env}

    async def start(self) -> None:
        self._stopping = False
        await asyncio.to_thread(self._kill_left_behind)
        self._supervisor = asyncio.create_task(self._supervise())

    def _kill_left_behind(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pgid = int(self.group_file.read_text())
            # Only a group that is still vLLM's (a reused pid is someone else's).
            members = [p for p in psutil.process_iter(["cmdline"])
                       if _pgid(p.pid) == pgid]
            if members and all("vllm" in " ".join(p.info["cmdline"] or []).lower()
                               for p in members):
                log.warning("killing the vLLM processes a previous start left behind")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            self.group_file.unlink(missing_ok=True)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.to_thread(self._kill)
        await self.http.aclose()

    async def wait_ready(self) -> None:
        """Returns once the engine answers; EngineUnavailable past the configured wait, so
        a request during a restart gets a 503 with retry-after instead of hanging."""
        if self.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.engine_wait_seconds)
        except TimeoutError:
            raise EngineUnavailable from None

    def note_answer(self) -> None:
        self.last_answer = time.monotonic()

    def _kill(self) -> None:
        """Stops the whole process group: vLLM's engine core and workers outlive its API
        server process if only that one dies."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            deadline = time.monotonic() + 10
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.state = EngineState.DOWN
        self.ready.clear()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def mark_unreachable(self) -> None:
        """A request could not reach the engine: stop sending more until the supervisor has
        seen it healthy again (it restarts the process if it is gone)."""
        if self.state is EngineState.READY:
            self.state = EngineState.STARTING
            self.ready.clear()

    def _spawn(self) -> None:
        # Adapters registered with an earlier process are gone with it.
        self.generation += 1
        self.api_key = secrets.token_urlsafe(32)
        self.http.headers["authorization"] = f"Bearer {self.api_key}"
        if self.socket_path:
            self.socket_path.unlink(missing_ok=True)
        else:
            # Free now, maybe taken by someone else before vLLM binds it: the supervisor
            # checks that the listener it reaches is its own child before it says ready.
            self.port = _free_port(str(self.host))
            self.http.base_url = httpx.URL(self.url)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(self.log_path, ENGINE_LOG_MAX_BYTES)
        cuda = _has_cuda()
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                self.command(cuda), env=self.environment(cuda), stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=Path(__file__).resolve().parents[1],
            )
        self.group_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.group_file.write_text(str(self._proc.pid))

    def _listener_is_ours(self) -> bool:
        if self.host is None or self._proc is None:
            return True  # a unix socket in a 0700 directory
        for conn in psutil.net_connections(kind="tcp"):
            # laddr is an empty tuple only for sockets without an address (not a listener).
            if (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == self.port
                    and conn.pid):
                with contextlib.suppress(ProcessLookupError):
                    return os.getpgid(conn.pid) == self._proc.pid
        return False

    async def _probe(self, http: httpx.AsyncClient) -> bool:
        try:
            return (await http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _warm_up(self, http: httpx.AsyncClient) -> None:
        """One tiny completion before the engine is called ready: vLLM's first request pays
        one-time costs (measured on 2 cores: a first 1-token sample 3.2 s, the next 0.1 s),
        which would otherwise be a tenant's, e.g. the first Tinker sample after a save."""
        started = time.monotonic()
        try:
            # Token ids, with log-probabilities of the prompt and the answer: the paths Tinker
            # sampling takes too.
            await http.post("/v1/completions", timeout=WARM_UP_SECONDS, json={
                "model": self.model.name, "prompt": [1, 2, 3], "max_tokens": 2,
                "temperature": 0.0, "logprobs": 0, "prompt_logprobs": 0})
        except httpx.HTTPError as exc:
            log.warning("the warm-up request to vLLM failed (%s); serving anyway", exc)
            return
        log.debug("vLLM warmed up in %.1f s", time.monotonic() - started)

    async def _supervise(self) -> None:
        s = self.settings
        async with self._client(s.engine_probe_timeout) as http:
            while not self._stopping:
                self.state = EngineState.STARTING
                self.ready.clear()
                # On the event loop's thread, not a pool thread: the parent-death signal
                # is tied to the thread that started the child.
                self._spawn()
                http.base_url = self.http.base_url
                # A cluster replica answers no route without the key (serving/replica_auth.py).
                http.headers["authorization"] = self.http.headers["authorization"]
                # The first start is said once it is ready; a restart is news.
                log.log(logging.INFO if self.generation > 1 else logging.DEBUG,
                        "starting vLLM for %s on %s (log: %s)", self.model.name,
                        self.socket_path or f"{self.host}:{self.port}", self.log_path)
                started = time.monotonic()
                been_ready, missed = False, 0
                while not self._stopping and self._proc and self._proc.poll() is None:
                    healthy = await self._probe(http) or (
                        been_ready and time.monotonic() - self.last_answer < s.engine_probe_timeout)
                    if healthy and not been_ready and not self._listener_is_ours():
                        log.error("port %d answers, but not from this vLLM; restarting on "
                                  "another", self.port)
                        break
                    if healthy:
                        missed = 0
                        if self.on_healthy is not None:
                            try:
                                await self.on_healthy()
                            except Exception:
                                # A DB blip must not end this supervision (the engine would
                                # go unwatched and unannounced for good): the next
                                # healthy probe reports it again.
                                log.exception("the healthy engine %s could not be reported",
                                              self.model.name)
                        if not been_ready:
                            await self._warm_up(http)
                        if self.state is not EngineState.READY:
                            self.state = EngineState.READY
                            self.ready.set()
                            if not been_ready:
                                log.info("model engine ready: %s (vLLM, after %.0f s; its "
                                         "log: %s)", self.model.name,
                                         time.monotonic() - started, self.log_path)
                            been_ready = True
                    elif been_ready:
                        # One slow probe on a saturated node must not kill every stream on
                        # it: requests go on, and only several misses in a row restart it.
                        missed += 1
                        if missed >= s.engine_probe_failures:
                            log.warning("vLLM missed %d health checks in a row; restarting",
                                        missed)
                            break
                        log.warning("vLLM missed a health check (%d of %d)", missed,
                                    s.engine_probe_failures)
                    elif time.monotonic() - started > s.engine_startup_timeout:
                        log.error("vLLM did not become healthy in time; restarting")
                        break
                    await asyncio.sleep(0.5 if self.state is EngineState.READY else 0.25)
                self.state = EngineState.DOWN
                self.ready.clear()
                await asyncio.to_thread(self._kill)
                if not self._stopping:
                    log.warning("vLLM exited; restarting it")
                    self.restarts += 1
                    await asyncio.sleep(1)
