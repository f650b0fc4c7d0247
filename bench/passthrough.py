"""The least a proxy in front of the engine can cost: a bare ASGI app that forwards each
request to a vLLM server's unix socket and streams the answer back byte for byte, with the
engine's key added. No auth, no routing, no rewriting, no database. `bench/serve.py --only p2`
runs it under uvicorn (as `tuneserve serve` runs, same loop and HTTP parser) beside tuneserve,
in front of the same engine, so tuneserve's added latency is compared with a floor measured in
the same run.

`PASSTHROUGH_UDS=... PASSTHROUGH_KEY=... python -m uvicorn bench.passthrough:app --port N`
"""

import os
from typing import Any

import httpx

UDS = os.environ.get("PASSTHROUGH_UDS", "")
KEY = os.environ.get("PASSTHROUGH_KEY", "")
engine = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=UDS), base_url="http://vllm",
                           timeout=600)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await engine.aclose()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = engine.build_request(scope["method"], scope["path"], content=body, headers={
        "authorization": f"Bearer {KEY}", "content-type": "application/json"})
    response = await engine.send(request, stream=True)
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(b"content-type",
                                 response.headers.get("content-type", "").encode())]})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()
