"""tuneserve's control plane inside the test process: the app `tuneserve serve` runs (built by
api/app.py's factory, its lifespan started and stopped as uvicorn does it), on a fresh copy of
the session's migrated database, answering the official `openai` client and plain httpx
through a transport that hands each request to the app: no process, port or migration to wait
for. Its start costs its services' start, a fraction of a second, where a `tuneserve serve`
costs seconds, so the control-plane tests run in the fast tier.

A test that needs a real process (one it kills or restarts, whose log it reads, that trains, or
that it talks to over a socket) uses tests/support/server.py instead."""

import concurrent.futures
import contextlib
import io
import logging
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self
from unittest import mock
from urllib.parse import unquote

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import openai
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message

import api.cli
from api.app import create_app
from api.services import Services, services_of
from api.settings import Settings
from tests.support import postgres
from tests.support.server import KeysFromCli

log = logging.getLogger("tests.in_process")

# How long a response closed before its end waits for the app to hear that its client went
# away (an event stream stops at once), before the app's task is cancelled.
GONE_WAIT_SECONDS = 10.0


class _Exchange:
    """One request and its response, as uvicorn carries them (spec 2.3, as uvicorn says): the
    body is read as the app asks for it, in a thread (a test's body may block until other
    requests arrive), and the response's messages come back as the app sends them."""

    def __init__(self, transport: "AppTransport", request: httpx.Request) -> None:
        self._transport, self._request = transport, request
        self._messages: queue.Queue[Message | None] = queue.Queue()
        raw_path, _, query = request.url.raw_path.partition(b"?")
        self._scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": request.method, "scheme": request.url.scheme,
            "root_path": "", "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path,
            "query_string": query, "server": transport.server, "client": ("127.0.0.1", 50000),
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "state": dict(transport.state),
        }
        stream = request.stream
        assert isinstance(stream, httpx.SyncByteStream)  # a sync client's
        self._in_memory = isinstance(stream, httpx.ByteStream)
        self._chunks = iter(stream)
        self._body_read = False
        # The client's read timeout, as a socket's would end a wait for the app.
        self._read_timeout: float | None = request.extensions.get("timeout", {}).get("read")
        self._complete = False  # the app sent the response's end
        self._over: anyio.Event | None = None  # the response is complete, or the client gone
        self._task: concurrent.futures.Future[None] | None = None

    def send(self) -> httpx.Response:
        portal = self._transport.portal
        self._over = portal.call(anyio.Event)
        self._transport.opened(self)
        self._task = portal.start_task_soon(self._run)
        start = self._next_message()
        if start is None:  # the app failed, or ended without answering: uvicorn's answer
            return httpx.Response(500, text="Internal Server Error", request=self._request)
        return httpx.Response(
            start["status"], headers=[(k, v) for k, v in start.get("headers", [])],
            stream=_ResponseBody(self), request=self._request)

    async def _run(self) -> None:
        try:
            await self._transport.app(self._scope, self._receive, self._send)
        except Exception:
            log.exception("Exception in ASGI application")  # as uvicorn logs it
        finally:
            self._messages.put(None)
            self._transport.closed(self)

    def _next_message(self) -> Message | None:
        """The app's next message to the client (None: the app ended)."""
        try:
            return self._messages.get(timeout=self._read_timeout)
        except queue.Empty:
            self.close()
            raise httpx.ReadTimeout(f"no answer in {self._read_timeout} s",
                                    request=self._request) from None

    def _next_chunk(self) -> bytes | None:
        return next(self._chunks, None)

    async def _receive(self) -> Message:
        assert self._over is not None
        if not self._body_read and not self._over.is_set():
            if self._in_memory:
                self._body_read = True
                return {"type": "http.request", "body": b"".join(self._chunks),
                        "more_body": False}
            # In a thread of its own: a body that blocks holds none of the app's threads.
            chunk = await anyio.to_thread.run_sync(self._next_chunk,
                                                   limiter=anyio.CapacityLimiter(1))
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self._body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._over.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        assert self._over is not None
        if self._over.is_set():
            return  # the client went away: uvicorn drops what is sent after
        self._messages.put(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._complete = True
            self._over.set()

    def body(self) -> Iterator[bytes]:
        while (message := self._next_message()) is not None:
            if message["type"] != "http.response.body":
                continue
            if chunk := message.get("body", b""):
                yield bytes(chunk)
            if not message.get("more_body", False):
                return

    def close(self) -> None:
        """The client is done with the response: if the app is still sending it (an event
        stream), it hears that the client went away, and this waits until it stopped."""
        assert self._task is not None and self._over is not None
        if self._complete or self._task.done():
            return
        with contextlib.suppress(RuntimeError):  # the portal stopped: the app with it
            self._transport.portal.call(self._over.set)
        concurrent.futures.wait([self._task], GONE_WAIT_SECONDS)
        self._task.cancel()


class _ResponseBody(httpx.SyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        return self._exchange.body()

    def close(self) -> None:
        self._exchange.close()


class AppTransport(httpx.BaseTransport):
    """httpx's way into an ASGI app whose lifespan runs on `portal`'s event loop: each request
    is handed to the app there, as uvicorn hands it over from a socket, with the request body
    and the response streamed both ways (httpx.ASGITransport reads a response whole, and is
    async only)."""

    def __init__(self, app: ASGIApp, portal: anyio.from_thread.BlockingPortal,
                 server: tuple[str, int], state: dict[str, Any]) -> None:
        self.app, self.portal, self.server, self.state = app, portal, server, state
        self._open: set[_Exchange] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _Exchange(self, request).send()

    def opened(self, exchange: _Exchange) -> None:
        with self._lock:
            self._open.add(exchange)

    def closed(self, exchange: _Exchange) -> None:
        with self._lock:
            self._open.discard(exchange)

    def close_all(self) -> None:
        """Ends the responses still open (a stream a test left open), before the app stops."""
        with self._lock:
            still_open = list(self._open)
        for exchange in still_open:
            exchange.close()


class InProcessControlPlane(KeysFromCli):
    """tuneserve without a model engine in this process, on `database_url` (a database at the
    newest revision: see `control_plane_in_process`), with `settings` (Settings' fields, as
    values) over the defaults a control plane of the suite has. API nodes sharing one
    database share the key the first of them created: pass it as `api_key`.

    Nothing trains on it: its jobs wait queued (`max_concurrent_jobs` 0), unless a test
    passes another limit."""

    def __init__(self, data_dir: Path, database_url: str, api_key: str | None = None,
                 **settings: Any) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.api_key = api_key or "sk-test-" + os.urandom(12).hex()
        self.settings = Settings(**{
            "data_dir": data_dir, "database_url": database_url,
            "bootstrap_api_key": self.api_key, "serving_enabled": False,
            "max_concurrent_jobs": 0, **settings})
        self.root_url = f"http://{self.settings.host}:{self.settings.port}"
        self.base_url = self.root_url + "/v1"
        self.pid = os.getpid()  # the node's process: this one
        self._stack = contextlib.ExitStack()
        self._transport: AppTransport | None = None

    def start(self) -> Self:
        app = create_app(self.settings)
        # Starlette's test client runs the lifespan (uvicorn's part) on an event loop of its
        # own; the requests go to the app on that loop through `AppTransport`.
        lifespan = self._stack.enter_context(TestClient(app))
        assert lifespan.portal is not None
        self._transport = AppTransport(app, lifespan.portal,
                                       (self.settings.host, self.settings.port),
                                       lifespan.app_state)
        self._stack.callback(self._transport.close_all)
        return self

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def services(self) -> Services:
        """The running app's parts (its database, blob store, scheduler...)."""
        assert self._transport is not None, "not started"
        return services_of(self._transport.app)

    def http(self, api_key: str | None = None) -> httpx.Client:
        assert self._transport is not None, "not started"
        return httpx.Client(transport=self._transport, base_url=self.base_url, timeout=120,
                            headers={"Authorization": f"Bearer {api_key or self.api_key}"})

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        assert self._transport is not None, "not started"
        # openai takes an httpx.Client (its types name only httpx2's).
        return openai.OpenAI(api_key=api_key or self.api_key, base_url=self.base_url,
                             max_retries=0, timeout=120,
                             http_client=httpx.Client(transport=self._transport))  # type: ignore[arg-type]

    def cli(self, *args: str) -> str:
        """Runs `tuneserve ARGS` here, on this control plane's settings (the environment is
        the whole process's, not this plane's); returns its stdout."""
        out, err = io.StringIO(), io.StringIO()
        with (mock.patch.object(api.cli, "Settings", lambda **_: self.settings),
              contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
            try:
                api.cli.main(list(args))
            except SystemExit as exc:
                if exc.code:
                    said = exc.code if isinstance(exc.code, str) else ""
                    raise RuntimeError(f"tuneserve {' '.join(args)} failed:\n"
                                       f"{err.getvalue()}{said}") from None
        return out.getvalue()


@contextlib.contextmanager
def fresh_database(request: pytest.FixtureRequest, kind: str, data_dir: Path) -> Iterator[str]:
    """A database of `kind` ("sqlite" or "postgresql") at the newest revision, copied from the
    session's migrated template (tests/conftest.py); its URL. A PostgreSQL one is dropped
    after."""
    if kind == "sqlite":
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "tuneserve.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    name, url = postgres.create_database(request.getfixturevalue("postgres_template"))
    try:
        yield url
    finally:
        postgres.drop_database(name)


@contextlib.contextmanager
def control_plane_in_process(request: pytest.FixtureRequest, kind: str, data_dir: Path,
                             **settings: Any) -> Iterator[InProcessControlPlane]:
    """A started `InProcessControlPlane` on a fresh database of `kind`."""
    with (fresh_database(request, kind, data_dir) as url,
          InProcessControlPlane(data_dir, url, **settings) as plane):
        yield plane
