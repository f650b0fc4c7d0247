"""Shared real services: one SeaweedFS and fresh PostgreSQL databases for the whole session."""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from storage.blob import BlobStore, LocalBlobStore, S3BlobStore
from storage.db import Database
from storage.ids import random_token
from tests.support import postgres
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import TuneserveServer

# Small limits so the 413 paths are cheap to reach.
SMALL_FILE_LIMIT = 4 << 20
SMALL_PART_LIMIT = 2 << 20


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    server = SeaweedFS().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_env(seaweedfs: SeaweedFS) -> dict[str, str]:
    return seaweedfs.env("tuneserve-test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    name, url = postgres.create_database()
    yield url
    postgres.drop_database(name)


@pytest.fixture(params=["local", "s3"])
def blob_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    env = request.getfixturevalue("s3_env")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return S3BlobStore(f"s3://tuneserve-test/{random_token(8)}", env["TUNESERVE_S3_ENDPOINT"])


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path / 'meta.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture(scope="session", params=["local+sqlite", "s3+postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TuneserveServer]:
    """A running tuneserve: embedded defaults, or S3 (SeaweedFS) with PostgreSQL."""
    env = {"TUNESERVE_MAX_FILE_BYTES": str(SMALL_FILE_LIMIT), "TUNESERVE_MAX_PART_BYTES":
           str(SMALL_PART_LIMIT)}
    db_name = None
    if request.param == "s3+postgresql":
        db_name, url = postgres.create_database()
        env |= request.getfixturevalue("s3_env") | {"TUNESERVE_DATABASE_URL": url}
        env["TUNESERVE_BLOB_URL"] += "/" + random_token(8)
    srv = TuneserveServer(tmp_path_factory.mktemp("tuneserve"), env).start()
    yield srv
    srv.stop()
    if db_name:
        postgres.drop_database(db_name)


@pytest.fixture(scope="session")
def other_key(server: TuneserveServer) -> str:
    """A key of a second project on the same server."""
    return server.cli("keys", "create", "--project", "other-team").strip()


@pytest.fixture
def client(server: TuneserveServer) -> openai.OpenAI:
    return server.client()
