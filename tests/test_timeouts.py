"""Nothing waits on storage forever: a black-holed S3 or PostgreSQL endpoint (it takes the
connection and never answers) fails a call within its timeouts, and a runaway statement is
cancelled."""

import socket
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ReadTimeoutError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage.blob import S3BlobStore
from storage.db import Database


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that completes TCP connections (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


def test_a_black_holed_s3_endpoint_fails_within_its_timeouts(
        black_hole: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "tuneserve")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "tuneserve")
    store = S3BlobStore("s3://bucket/p", f"http://127.0.0.1:{black_hole}",
                        create_bucket=False, connect_timeout=1, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        store.get("some/key")
    # 5 tries of 1 s each, and the standard retry mode's backoff between them.
    assert time.monotonic() - started < 30


def test_a_black_holed_database_fails_within_its_connect_timeout(black_hole: int) -> None:
    db = Database(f"postgresql+psycopg://tuneserve@127.0.0.1:{black_hole}/nothing",
                  connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(OperationalError), db.session() as s:
        s.execute(text("SELECT 1"))
    assert time.monotonic() - started < 10
    db.dispose()


def test_a_runaway_statement_is_cancelled(pg_url: str) -> None:
    db = Database(pg_url, statement_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="statement timeout"), db.session() as s:
        s.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 4
    with db.startup_lock(), db.session() as s:  # the start-up lock lifts it while it waits
        assert s.execute(text("SELECT 1")).scalar() == 1
    db.dispose()
