"""The attacks that are known and held: each module is named after what a hostile tenant (or an
upgrade) tries, and each test fails without the fix that holds it.

The control plane is enough for most of them: a tuneserve without a model engine, once on its
embedded defaults (local blobs, SQLite) and once on PostgreSQL, so a column's length or a
constraint is held alike on both. It runs in the test's process (tests/support/in_process.py);
an attack that needs a real `tuneserve serve` (a socket, its log) starts one with
`start_control_plane`."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.server import TuneserveServer


def start_control_plane(data_dir: Path, db: str,
                        env: dict[str, str] | None = None) -> tuple[TuneserveServer, str | None]:
    """A tuneserve process without an engine on `db` ("sqlite" or "postgresql"); returns it
    and the PostgreSQL database's name to drop (None on SQLite)."""
    name = None
    env = dict(env or {})
    if db == "postgresql":
        name, url = postgres.create_database()
        env["TUNESERVE_DATABASE_URL"] = url
    return TuneserveServer(data_dir, env).start(), name


def stop_control_plane(server: TuneserveServer, db_name: str | None) -> None:
    server.stop()
    if db_name:
        postgres.drop_database(db_name)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def control_plane(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    """tuneserve without an engine, in this process, on each database in turn."""
    with control_plane_in_process(request, request.param,
                                  tmp_path_factory.mktemp(f"attack-{request.param}")) as plane:
        yield plane


@pytest.fixture(scope="session")
def attacker_key(control_plane: InProcessControlPlane) -> str:
    """A key of a second project on the control plane: the hostile tenant."""
    return control_plane.other_key()
