"""Inside a cluster replica's vLLM (`--middleware`): adapters come from the blob store, fetched
on the replica's own node, since the API node's disk is not there.

A load request whose `lora_path` is `blob:PREFIX` is answered by fetching PREFIX into the
node's adapter cache and passing the request on to vLLM with the local path. Only requests
with the replica's key are served so; the cache never deletes an adapter vLLM has registered
(it reads the files again when its own CPU cache dropped the weights)."""

import asyncio
import json
import os
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.adapter_cache import AdapterCache
from serving.adapter_errors import ModelNotFound
from serving.replica_auth import authorized
from serving.settings import ServingSettings
from storage.blob import open_blob_store

BLOB = "blob:"
_LOAD, _UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"


class BlobAdapters:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        settings = ServingSettings()
        self.key = os.environ.get("VLLM_API_KEY", "")
        self.registered: set[str] = set()
        self.cache = AdapterCache(
            settings.adapter_cache_dir or settings.data_dir / "adapter-cache",
            settings.adapter_cache_bytes, open_blob_store(settings),
            in_use=self.registered.__contains__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or scope["path"] not in (_LOAD, _UNLOAD) or not authorized(scope, self.key)):
            await self.app(scope, receive, send)  # vLLM's own auth answers the rest
            return
        body = await _read(receive)
        try:
            request: dict[str, Any] = json.loads(body)
            name = str(request["lora_name"])
        except (ValueError, KeyError, TypeError):
            await self.app(scope, _replay(body, receive), send)
            return
        if scope["path"] == _UNLOAD:
            self.registered.discard(name)
        elif str(request.get("lora_path", "")).startswith(BLOB):
            prefix = request["lora_path"][len(BLOB):]
            try:
                path = await asyncio.to_thread(self.cache.path, name, prefix)
            except (ModelNotFound, OSError) as exc:
                await _answer(send, 404, f"adapter files not found: {type(exc).__name__}")
                return
            self.registered.add(name)
            body = json.dumps({**request, "lora_path": str(path)}).encode()
            scope = {**scope, "headers": [
                (k, str(len(body)).encode() if k == b"content-length" else v)
                for k, v in scope["headers"]]}
        await self.app(scope, _replay(body, receive), send)

async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once more (it was read to look at it), then the client's own messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
