"""Engine, sessions and schema migrations; the same code on SQLite and PostgreSQL."""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from storage.tombstones import record_deletions

_MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, connect_timeout: int = 5, statement_timeout: float = 60.0,
                pool_timeout: float = 10.0) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _: Any) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default
            # (and off again while migrations rebuild tables: storage/migrations/env.py).
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # PostgreSQL: a connection attempt and each statement are bounded (the start-up lock
    # lifts the statement limit while it waits), and so is the wait for a pooled connection.
    options = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         pool_timeout=pool_timeout,
                         connect_args={"connect_timeout": connect_timeout, "options": options})


def rows_affected(session: Session, statement: Executable) -> int:
    """Runs an UPDATE or DELETE and returns how many rows it changed. Session.execute is typed
    as returning a plain Result; for these statements it is a CursorResult, which counts."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")


# Any fixed number: the PostgreSQL advisory lock that serializes start-up work.
_STARTUP_LOCK = 0x7475_6E65  # "tune"


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str, **timeouts: Any) -> None:
        self.engine = make_engine(url, **timeouts)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        record_deletions(self.sessions)

    def migrate(self) -> None:
        with self.startup_lock():
            migrate(self.engine)

    @contextmanager
    def startup_lock(self) -> Iterator[None]:
        """Held by one process at a time among all that share this DB, so API nodes started
        together run migrations and create the first key once: a PostgreSQL advisory lock,
        or a file lock beside a SQLite file."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                # Waiting for another node's migrations may take longer than a statement may.
                c.execute(text("SET statement_timeout = 0"))
                c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _STARTUP_LOCK})
                try:
                    yield
                finally:
                    c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _STARTUP_LOCK})
                    c.execute(text("RESET statement_timeout"))
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
