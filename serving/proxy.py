"""Chat completions forwarded to the vLLM engine, streamed back as they are generated.

The proxy touches as little as it can: the body goes upstream as sent (with the engine's
name for the model), and answers come back byte for byte except for the `model` field,
which is put back to the name the client asked for."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from serving.adapters import Route
from serving.engine import EngineUnavailable, VLLMEngine, send_with_retry


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _renamer(route: Route) -> tuple[bytes, bytes] | None:
    if route.served == route.requested:
        return None
    # vLLM writes compact JSON, so the field appears exactly like this.
    return (b'"model":' + json.dumps(route.served).encode(),
            b'"model":' + json.dumps(route.requested).encode())


class ChatProxy:
    def __init__(self, engine: VLLMEngine) -> None:
        self.engine = engine
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        )

    async def close(self) -> None:
        await self.http.aclose()

    def _url(self) -> str:
        if not self.engine.ready.is_set():
            raise EngineUnavailable
        return f"{self.engine.url}/v1/chat/completions"

    async def complete(self, body: dict[str, Any], route: Route) -> Answer:
        request = self.http.build_request("POST", self._url(),
                                          json={**body, "model": route.served})
        try:
            response = await send_with_retry(self.http, request)
        except httpx.TransportError as exc:
            self.engine.mark_unreachable()
            raise EngineUnavailable from exc
        data = response.json()
        if isinstance(data, dict) and "model" in data:
            data["model"] = route.requested
            _drop_absent(data)
        return Answer(response.status_code, data)

    async def stream(self, body: dict[str, Any], route: Route) -> tuple[int, AsyncIterator[bytes]]:
        """Opens the upstream stream; returns its status and the SSE bytes to send on.
        Closing the iterator (the client went away) closes the upstream request, and vLLM
        then aborts the generation."""
        request = self.http.build_request("POST", self._url(),
                                          json={**body, "model": route.served})
        try:
            response = await send_with_retry(self.http, request, stream=True)
        except httpx.TransportError as exc:
            self.engine.mark_unreachable()
            raise EngineUnavailable from exc
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            return response.status_code, _once(response.content)
        return 200, _events(response, _renamer(route))


# Fields OpenAI sends as null; vLLM writes null for other absent ones, which OpenAI omits.
_NULLABLE = {"content", "refusal", "logprobs", "finish_reason"}


def _drop_absent(completion: dict[str, Any]) -> None:
    for key in [k for k, v in completion.items() if v is None]:
        del completion[key]
    for choice in completion.get("choices", []):
        for key in [k for k, v in choice.items() if v is None and k not in _NULLABLE]:
            del choice[key]
        message = choice.get("message") or {}
        for key in [k for k, v in message.items() if v is None and k not in _NULLABLE]:
            del message[key]
        if message.get("tool_calls") == []:
            del message["tool_calls"]
    usage = completion.get("usage") or {}
    for key in [k for k, v in usage.items() if v is None]:
        del usage[key]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _events(response: httpx.Response, rename: tuple[bytes, bytes] | None,
                  ) -> AsyncIterator[bytes]:
    try:
        if rename is None:
            async for chunk in response.aiter_raw():
                yield chunk
            return
        old, new = rename
        pending = b""
        async for chunk in response.aiter_raw():
            pending += chunk
            # Rename whole events only: a chunk boundary may cut the field in two.
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                yield pending[: cut + 2].replace(old, new)
                pending = pending[cut + 2 :]
        if pending:
            yield pending.replace(old, new)
    finally:
        await response.aclose()
