"""A fresh database on the PostgreSQL running on this machine (127.0.0.1:5432, trust auth)."""

import os

import psycopg

from storage.ids import random_token

ADMIN_URL = os.environ.get("TUNESERVE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_database(template: str | None = None) -> tuple[str, str]:
    """Returns (database name, SQLAlchemy URL): empty, or a copy of `template` (a database
    nobody is connected to)."""
    name = "tuneserve_test_" + random_token(10).lower()
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
