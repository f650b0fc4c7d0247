"""Sending a project's request for a model to the replica that serves it: through the
adapter manager's lease and the proxy, retried on another replica when one went away before
it saw the request, and reloaded once when a replica forgot the adapter. Inference routes,
the built-in evaluator and the graders' judge all send this way."""

from collections.abc import Awaitable, Callable
from typing import Any

from serving.adapters import (
    AdapterLoadError,
    AdapterManager,
    Lease,
    ModelNotFound,
    ModelNotServed,
)
from serving.engine import EngineTimeout, EngineUnavailable
from serving.proxy import Answer, Proxy, Stream

# What `send` raises for a request that could not be answered; the caller says it its way
# (an HTTP error for a route, a flag for a judge, a retry for an evaluation).
SERVING_ERRORS = (EngineUnavailable, EngineTimeout, ModelNotFound, ModelNotServed,
                  AdapterLoadError)


async def send(adapters: AdapterManager, proxy: Proxy, project_id: str, model: str,
               path: str, payload: dict[str, Any], stream: bool,
               guard: Callable[[Awaitable[Answer]], Awaitable[Answer]] | None = None,
               request_id: str | None = None) -> tuple[Stream | Answer, Lease]:
    """Sends a request for the project's `model` to the replica its lease names, and returns
    the answer with the lease, which the caller releases when the answer is over. A replica
    that went away before it saw the request is left for another one; a replica that forgot
    the adapter (it restarted) gets it again: never a 404 for a model that exists. `guard`
    wraps a non-streamed request (e.g. to cancel it when the client leaves)."""
    lease = await adapters.acquire(project_id, model)
    try:
        for attempt in (1, 2):
            body = {**payload, "model": lease.served, "cache_salt": lease.cache_salt}
            try:
                if stream:
                    out: Stream | Answer = await proxy.stream(path, body, lease, request_id)
                else:
                    work = proxy.complete(path, body, lease, request_id)
                    out = await (guard(work) if guard else work)
            except EngineUnavailable:
                if attempt == 2:
                    raise
                # The replica went away before it saw the request (now marked so): another
                # replica of the base takes it, if there is one.
                lease.release()
                lease = await adapters.acquire(project_id, model)
                continue
            if (isinstance(out, Answer) and out.status == 404 and attempt == 1
                    and lease.prefix is not None):
                # The replica restarted between routing and sending and forgot the adapter:
                # load it again and send once more.
                await adapters.reload(lease)
                continue
            return out, lease
    except BaseException:
        lease.release()
        raise
    raise AssertionError("unreachable")  # every attempt returns or raises
