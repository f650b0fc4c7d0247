"""Per-project rate limits on the model routes and a cap on stored bytes, kept in the shared
DB so that they hold across API nodes.

Stored bytes are the project's files plus what its uploads in progress hold: an upload
reserves its `bytes` when it is created, and its parts beyond that (parts sent again) count
too. Whatever adds to them checks the quota and writes its row in one transaction that holds
the project's lock (`lock_project_storage`), so concurrent requests, on any API node, cannot
all pass the same room.

Rate limits count requests and tokens per minute (fixed one-minute windows, one row per
project and minute, incremented atomically only while the request still fits), and answer
as OpenAI does: `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*`
on every answer, a 429 of type `requests` or `tokens` with `retry-after` past a limit. Tokens
are counted when the request arrives, as OpenAI counts them: its prompt's estimate (4
characters a token) plus what it may generate (`n` x its max tokens)."""

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from starlette.responses import Response

from api.errors import APIError
from api.settings import Settings
from storage.db import Database, rows_affected
from storage.models import File, Project, RateWindow, StoredResponse, Upload, UploadPart

WINDOW_SECONDS = 60
CHARS_PER_TOKEN = 4
# What a request that does not cap its answer is counted as generating.
DEFAULT_COMPLETION_TOKENS = 256
_NO_LIMIT = 2**62


def estimate_tokens(prompt: Any, n: int | None, max_tokens: int | None) -> int:
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return (math.ceil(len(text) / CHARS_PER_TOKEN)
            + (n or 1) * (max_tokens or DEFAULT_COMPLETION_TOKENS))


def count(session: Session, project_id: str, window: int, tokens: int, max_requests: int,
          max_tokens: int) -> tuple[bool, int, int]:
    """Adds one request of `tokens` to the project's window if both counts stay within
    their limits (0: none): (admitted, requests, tokens) of the window afterwards."""
    rpm, tpm = max_requests or _NO_LIMIT, max_tokens or _NO_LIMIT
    if tokens > tpm:  # could never fit
        return False, *_counts(session, project_id, window)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = insert(RateWindow).values(project_id=project_id, window=window, requests=1,
                                       tokens=tokens)
    statement = values.on_conflict_do_update(
        index_elements=[RateWindow.project_id, RateWindow.window],
        set_={"requests": RateWindow.requests + 1, "tokens": RateWindow.tokens + tokens},
        where=(RateWindow.requests + 1 <= rpm) & (RateWindow.tokens + tokens <= tpm),
    ).returning(RateWindow.requests, RateWindow.tokens)
    row = session.execute(statement).first()
    if row is None:
        return False, *_counts(session, project_id, window)
    return True, int(row[0]), int(row[1])


def _counts(session: Session, project_id: str, window: int) -> tuple[int, int]:
    row = session.execute(select(RateWindow.requests, RateWindow.tokens).where(
        RateWindow.project_id == project_id, RateWindow.window == window)).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def admit(settings: Settings, db: Database, project_id: str,
                tokens: int) -> dict[str, str]:
    """Counts a model request against the project's limits: the rate-limit headers for its
    answer, or a 429 with them."""
    rpm, tpm = settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute
    if not (rpm or tpm):
        return {}
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    def counted() -> tuple[bool, int, int]:
        with db.session() as session:
            return count(session, project_id, window, tokens, rpm, tpm)

    admitted, used_requests, used_tokens = await run_in_threadpool(counted)
    reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    headers: dict[str, str] = {}
    for kind, limit, used in (("requests", rpm, used_requests), ("tokens", tpm, used_tokens)):
        if limit:
            headers |= {f"x-ratelimit-limit-{kind}": str(limit),
                        f"x-ratelimit-remaining-{kind}": str(max(0, limit - used)),
                        f"x-ratelimit-reset-{kind}": f"{reset}s"}
    if admitted:
        return headers
    if rpm and used_requests + 1 > rpm:
        kind, label, limit, used = "requests", "requests per min (RPM)", rpm, used_requests
    else:
        kind, label, limit, used = "tokens", "tokens per min (TPM)", tpm, used_tokens
    raise APIError(429, f"Rate limit reached for {label}: limit {limit}, used {used}, "
                   f"requested {1 if kind == 'requests' else tokens}. Please try again in "
                   f"{reset}s.", type=kind, code="rate_limit_exceeded",
                   headers=headers | {"retry-after": str(reset)})


async def rate_limited(settings: Settings, db: Database, project_id: str, tokens: int,
                       answer: Callable[[], Awaitable[Response]]) -> Response:
    """`answer()`, once the request is admitted; its rate-limit headers on whatever comes
    back, errors included (as OpenAI sends them)."""
    headers = await admit(settings, db, project_id, tokens)
    try:
        response = await answer()
    except APIError as err:
        err.headers = {**headers, **err.headers}
        raise
    response.headers.update(headers)
    return response


def forget_old_windows(session: Session, now: float) -> int:
    """Drops windows that have ended (the reaper calls this)."""
    current = int(now // WINDOW_SECONDS)
    return rows_affected(session, delete(RateWindow).where(RateWindow.window < current))


def lock_project_storage(session: Session, project_id: str) -> None:
    """Holds the project's lock until the transaction ends: every request that stores bytes
    for the project checks the quota and writes its row under it, one after another, on
    every API node. PostgreSQL: the project's row lock (FOR NO KEY UPDATE, which does not
    hold up inserts of rows that reference the project). SQLite: the database's write lock,
    taken by a write that changes nothing; it must be the transaction's first statement
    (a transaction that read first may not be able to write)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Project.seq).where(Project.id == project_id)
                        .with_for_update(key_share=True))
    else:
        session.execute(update(Project).where(Project.id == project_id)
                        .values(name=Project.name)
                        .execution_options(synchronize_session=False))


def stored_bytes(session: Session, project_id: str) -> int:
    """The project's files, its stored responses, and what its uploads in progress hold:
    each its declared bytes, or its parts' when they are more."""
    files = session.scalar(select(func.coalesce(func.sum(File.bytes), 0))
                           .where(File.project_id == project_id)) or 0
    sent = (select(func.coalesce(func.sum(UploadPart.bytes), 0))
            .where(UploadPart.upload_id == Upload.id).scalar_subquery())
    held = case((sent > Upload.bytes, sent), else_=Upload.bytes)
    uploads = session.scalar(
        select(func.coalesce(func.sum(held), 0)).where(
            Upload.project_id == project_id, Upload.status == "pending",
            Upload.expires_at > int(time.time()))) or 0
    responses = session.scalar(select(func.coalesce(func.sum(StoredResponse.bytes), 0))
                               .where(StoredResponse.project_id == project_id)) or 0
    return int(files) + int(uploads) + int(responses)


def pending_uploads(session: Session, project_id: str) -> int:
    """The project's uploads in progress (not expired)."""
    return int(session.scalar(select(func.count()).select_from(Upload).where(
        Upload.project_id == project_id, Upload.status == "pending",
        Upload.expires_at > int(time.time()))) or 0)


def storage_full(quota: int, used: int, more: int) -> APIError | None:
    """The error for storing `more` bytes on top of `used` under `quota` (0: no quota)."""
    if not quota or used + more <= quota:
        return None
    return APIError(403, f"This project's files and uploads in progress hold {used} bytes "
                    f"of its {quota}-byte quota; "
                    f"{more} more do not fit. Delete files, or cancel uploads in progress, "
                    "to make room.",
                    code="storage_quota_exceeded")
