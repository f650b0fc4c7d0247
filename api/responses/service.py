"""Stored responses: what a request with `previous_response_id` continues from, the response
kept when it ends, and their lookups, each scoped to a project.

A stored response keeps its request's own input items and the response object as the client
got it; a chain (`previous_response_id` after `previous_response_id`) is put back together
by walking it oldest first, each response's input items then its output items, so a chain
stores each turn once. The `instructions` of earlier responses are not carried over (OpenAI's
rule): only the new request's apply. A chain whose older response was deleted goes back only
to the one after it."""

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.quotas import storage_full, stored_bytes
from api.responses.schemas import FORWARDED_FIELDS, ResponseRequest
from api.settings import Settings
from storage.db import Database
from storage.ids import new_id
from storage.models import StoredResponse

log = logging.getLogger("tuneserve.responses")

# Events whose `response` is the response object; the last two end a stream it is kept from.
_CARRYING_THE_RESPONSE = {"response.created", "response.in_progress", "response.completed",
                          "response.incomplete", "response.failed"}
_KEPT_AT = {"response.completed", "response.incomplete"}


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def check_supported(sent: dict[str, Any]) -> None:
    """A 400 naming the first tool, or tool choice, this server cannot run: only function
    tools are offered (built-in tools such as web search run on OpenAI's side)."""
    for i, tool in enumerate(sent.get("tools") or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise APIError(400, f"The tool type {kind!r} is not supported by this server: only "
                           "'function' tools are (run the tool yourself and send its output "
                           "back as a 'function_call_output' item).",
                           param=f"tools[{i}].type", code="unsupported_value")
    choice = sent.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") != "function":
        raise APIError(400, f"The tool choice type {choice.get('type')!r} is not supported by "
                       "this server: only 'function' is.", param="tool_choice.type",
                       code="unsupported_value")


def own_input_items(sent_input: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as items (a string is one user message)."""
    if isinstance(sent_input, str):
        return [{"role": "user", "content": sent_input}]
    return sent_input


def _item_id(item: dict[str, Any]) -> str:
    given = item.get("id")
    if isinstance(given, str) and given:
        return given
    return new_id("msg_" if "role" in item else "item_")


def _found(session: Session, project_id: str, response_id: str) -> StoredResponse | None:
    return session.scalar(select(StoredResponse).where(
        StoredResponse.id == response_id, StoredResponse.project_id == project_id))


def get(session: Session, project_id: str, response_id: str) -> StoredResponse:
    row = _found(session, project_id, response_id)
    if row is None:
        raise APIError(404, f"Response with id '{response_id}' not found.",
                       param="response_id", code="not_found")
    return row


def delete(session: Session, project_id: str, response_id: str) -> None:
    session.delete(get(session, project_id, response_id))
    session.commit()


@dataclass
class Chain:
    """What a new response continues: the items to send before its own, and its depth."""

    items: list[dict[str, Any]]
    depth: int


def chain_of(session: Session, project_id: str, previous_id: str | None,
             max_chain: int, max_bytes: int) -> Chain:
    """`max_bytes`: the most the chain's stored responses may hold together (what one request
    may carry: a chain is sent as one), checked as it is read, so a longer chain costs this
    node at most that much and one response more before it is refused."""
    if previous_id is None:
        return Chain([], 1)
    previous = _found(session, project_id, previous_id)
    if previous is None:
        raise APIError(400, f"Previous response with id '{previous_id}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    if previous.depth >= max_chain:
        raise APIError(400, f"The chain of responses ending at '{previous_id}' already holds "
                       f"{previous.depth}; this server keeps chains of at most {max_chain}. "
                       "Start a new chain with the input you need.",
                       param="previous_response_id", code="previous_response_chain_too_long")
    rows, held = [previous], previous.bytes
    while True:
        if held > max_bytes:
            raise APIError(400, f"The chain of responses ending at '{previous_id}' holds more "
                           f"than {max_bytes} bytes, the most one request may carry. Start "
                           "a new chain with the input you need.",
                           param="previous_response_id", code="previous_response_chain_too_large")
        if rows[-1].previous_response_id is None or len(rows) >= max_chain:
            break
        older = _found(session, project_id, rows[-1].previous_response_id)
        if older is None:  # deleted: the chain goes back to here
            break
        rows.append(older)
        held += older.bytes
    items: list[dict[str, Any]] = []
    for row in reversed(rows):
        items += row.input_items
        items += row.response.get("output") or []
    return Chain(items, previous.depth + 1)


class Keeper:
    """Stamps the response with what the client asked (`store`, `previous_response_id`: the
    replica was sent neither) and stores it when it ends, unless `store` is false. A streamed
    response is stored before its end event goes on, so a client that read that event may at
    once continue from it, on any API node."""

    def __init__(self, db: Database, project_id: str, body: ResponseRequest, chain: Chain,
                 own_items: list[dict[str, Any]], max_bytes: int) -> None:
        self.db, self.project_id, self.max_bytes = db, project_id, max_bytes
        self.store = body.store is not False
        self.previous_id = body.previous_response_id
        self.depth = chain.depth
        self.own_items = own_items

    def _stamped(self, response: dict[str, Any]) -> dict[str, Any]:
        response["store"] = self.store
        response["previous_response_id"] = self.previous_id
        return response

    def _save(self, response: dict[str, Any]) -> None:
        size = _json_bytes(self.own_items) + _json_bytes(response)
        if size > self.max_bytes:
            log.warning("response %s not stored: %d bytes, over the %d allowed",
                        response.get("id"), size, self.max_bytes)
            return
        with self.db.session() as session:
            session.add(StoredResponse(
                id=response["id"], project_id=self.project_id,
                previous_response_id=self.previous_id, depth=self.depth,
                input_items=self.own_items,
                input_item_ids=[_item_id(item) for item in self.own_items],
                response=response, bytes=size, created_at=int(time.time())))
            session.commit()

    async def answer(self, body: Any) -> Any:
        """The whole response, stamped and kept."""
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return body
        self._stamped(body)
        if self.store and body.get("status") in ("completed", "incomplete"):
            await run_in_threadpool(self._save, body)
        return body

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The replica's events, passed on whole, those carrying the response stamped."""
        pending = b""
        async for chunk in chunks:
            pending += chunk
            *events, pending = pending.split(b"\n\n")
            if events:
                yield b"".join([await self._event(event) + b"\n\n" for event in events])
        if pending:
            yield pending

    async def _event(self, event: bytes) -> bytes:
        if b'"response":' not in event:
            return event
        lines = event.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data: {"):
                continue
            data = json.loads(line[len(b"data: "):])
            response = data.get("response")
            if data.get("type") not in _CARRYING_THE_RESPONSE or not isinstance(response, dict):
                return event
            self._stamped(response)
            if self.store and data["type"] in _KEPT_AT and isinstance(response.get("id"), str):
                await run_in_threadpool(self._save, response)
            lines[i] = b"data: " + json.dumps(data, separators=(",", ":")).encode()
        return b"\n".join(lines)


def _prepare(db: Database, settings: Settings, project_id: str, body: ResponseRequest,
             own_items: list[dict[str, Any]]) -> Chain:
    with db.session() as session:
        chain = chain_of(session, project_id, body.previous_response_id,
                         settings.max_response_chain, settings.max_inference_body_bytes)
        if body.store is not False:
            size = _json_bytes(own_items)
            if size > settings.max_stored_response_bytes:
                raise APIError(400, f"This request's input is {size} bytes as JSON; a stored "
                               f"response holds at most {settings.max_stored_response_bytes}. "
                               "Send less input, or `store: false`.", param="input",
                               code="response_too_large_to_store")
            full = storage_full(settings.max_project_stored_bytes,
                                stored_bytes(session, project_id), size)
            if full is not None:
                raise full
    return chain


async def prepare(db: Database, settings: Settings, project_id: str, body: ResponseRequest,
                  sent: dict[str, Any]) -> tuple[dict[str, Any], Keeper]:
    """What goes to the replica (never stored there), and the keeper of its answer."""
    check_supported(sent)
    own_items = own_input_items(body.input)
    chain = await run_in_threadpool(_prepare, db, settings, project_id, body, own_items)
    payload = {k: v for k, v in sent.items() if k in FORWARDED_FIELDS} | {"store": False}
    if chain.items:
        payload["input"] = chain.items + own_items
    return payload, Keeper(db, project_id, body, chain, own_items,
                           settings.max_stored_response_bytes)


def _listed(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as OpenAI lists it: with its id and type, a message's text as parts."""
    listed = {**item, "id": item_id}
    if "role" in item:
        listed.setdefault("type", "message")
        if isinstance(item.get("content"), str):
            part = "output_text" if item["role"] == "assistant" else "input_text"
            listed["content"] = [{"type": part, "text": item["content"]}]
    return listed


def input_items_page(row: StoredResponse, after: str | None, limit: int,
                     order: Literal["asc", "desc"]) -> tuple[list[dict[str, Any]], bool]:
    """One page of the response's own input items, and whether more follow."""
    items = [_listed(item, item_id) for item, item_id in zip(row.input_items,
                                                             row.input_item_ids, strict=True)]
    if order == "desc":
        items.reverse()
    if after is not None:
        at = next((i for i, item in enumerate(items) if item["id"] == after), None)
        if at is None:
            raise APIError(400, f"No such object for the 'after' cursor: '{after}'",
                           param="after", code="invalid_cursor")
        items = items[at + 1:]
    return items[:limit], len(items) > limit
