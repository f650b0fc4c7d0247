"""Inside a cluster replica's vLLM (`--middleware`): nothing is answered without the replica's
key, on any route.

vLLM's own `--api-key` guards only `/v1`, `/v2`, `/inference` and `/cohere`; a replica listens
on its node's address, where `/invocations` (SageMaker's chat and completions), `/tokenize`,
`/metrics` and the rest would answer anyone on the cluster's network without a key, past
every tenant's scoping and rate limit. The API nodes (serving/remote.py) and the replica's
own supervisor (serving/engine.py) send the key with every request."""

import json
import os
import secrets

from starlette.types import ASGIApp, Receive, Scope, Send


def authorized(scope: Scope, key: str) -> bool:
    """Whether the request carries `Authorization: Bearer <key>` (never, for an empty key)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bool(key) and secrets.compare_digest(value, f"Bearer {key}".encode())
    return False


class RequireKey:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # vLLM reads the same variable; without one, the replica answers nothing at all.
        self.key = os.environ.get("VLLM_API_KEY", "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or authorized(scope, self.key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {"message": "Unauthorized", "code": 401}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
