"""Shared real services: one SeaweedFS and fresh PostgreSQL databases for the whole session."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import openai
import pytest

from storage.base_models import DEFAULT_BASE_MODEL
from storage.blob import BlobStore, LocalBlobStore, S3BlobStore
from storage.db import Database
from storage.ids import random_token
from tests.support import postgres
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import TuneserveServer
from tests.support.tiers import MARKS, mark_by_fixtures

if TYPE_CHECKING:
    from tests.support.ray_cluster import RayCluster

def pytest_configure(config: pytest.Config) -> None:
    for name, what in MARKS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_by_fixtures(items)


ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "data" / "models"
SHORT_CONTEXT_MODEL = "SmolLM2-135M-Instruct-ctx64"
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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the newest revision, migrated once: `database` copies it."""
    path = tmp_path_factory.mktemp("template") / "meta.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    with db.engine.connect() as conn:  # everything into the main file, which is copied
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database at the newest revision, migrated once: `database` copies it."""
    name, url = postgres.create_database()
    db = Database(url)
    db.migrate()
    db.dispose()  # a template must have no connections
    yield name
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database at the newest revision, on each kind in turn."""
    name = None
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "meta.db")
        url = f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        name, url = postgres.create_database(request.getfixturevalue("postgres_template"))
    db = Database(url)
    yield db
    db.dispose()
    if name:
        postgres.drop_database(name)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The default base model, prepared once (`make test` has usually done it already)."""
    from storage.base_models import DEFAULT_BASE_MODEL
    from training.prepare import prepare_default_model

    prepare_default_model(MODELS_DIR / DEFAULT_BASE_MODEL)
    return MODELS_DIR


def _start_server(
    kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path, extra: dict[str, str] | None = None,
) -> Iterator[TuneserveServer]:
    env = {
        **(extra or {}),
        "TUNESERVE_MAX_FILE_BYTES": str(SMALL_FILE_LIMIT),
        "TUNESERVE_MAX_PART_BYTES": str(SMALL_PART_LIMIT),
        "TUNESERVE_MODELS_DIR": str(models_dir),
        "TUNESERVE_WORKER_HEARTBEAT_TIMEOUT": "10",
        # The twin below is trained (its length check) but never served.
        "TUNESERVE_TRAIN_UNSERVED_BASES": "true",
        # A tiny-context twin of the default model, to reach the length check cheaply.
        "TUNESERVE_BASE_MODELS": json.dumps([{"name": SHORT_CONTEXT_MODEL, "context_length": 64,
                                              "path": str(models_dir / DEFAULT_BASE_MODEL)}]),
    }
    db_name = None
    if kind == "s3+postgresql":
        db_name, url = postgres.create_database()
        env |= request.getfixturevalue("s3_env") | {"TUNESERVE_DATABASE_URL": url}
        env["TUNESERVE_BLOB_URL"] += "/" + random_token(8)
    srv = TuneserveServer(tmp_path_factory.mktemp("tuneserve"), env).start()
    yield srv
    srv.stop()
    if db_name:
        postgres.drop_database(db_name)


@pytest.fixture(scope="session")
def local_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 models_dir: Path) -> Iterator[TuneserveServer]:
    """tuneserve on its embedded defaults: local blobs, SQLite, and the suite's one vLLM."""
    yield from _start_server("local+sqlite", request, tmp_path_factory, models_dir,
                             {"TUNESERVE_SERVING_ENABLED": "true"})


@pytest.fixture(scope="session")
def chat_server(local_server: TuneserveServer) -> TuneserveServer:
    """`local_server` once its vLLM engine answers: what the chat, tool-call and client
    library tests talk to."""
    from tests.support.chat import wait_for_engine

    wait_for_engine(local_server)
    return local_server


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              models_dir: Path) -> Iterator[TuneserveServer]:
    """tuneserve at scale: S3 (SeaweedFS) and PostgreSQL."""
    yield from _start_server("s3+postgresql", request, tmp_path_factory, models_dir)


@pytest.fixture(scope="session", params=["local+sqlite", "s3+postgresql"])
def server(request: pytest.FixtureRequest) -> TuneserveServer:
    """Each storage configuration in turn."""
    return request.getfixturevalue("local_server" if request.param == "local+sqlite"
                                   else "s3_server")


@pytest.fixture(scope="session")
def other_key(server: TuneserveServer) -> str:
    """A key of a second project on the same server."""
    return server.other_key()


@pytest.fixture
def client(server: TuneserveServer) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def sft_job(local_server: TuneserveServer) -> "openai.types.fine_tuning.FineTuningJob":
    """The one shared SFT run: 24 examples in a JSON answer format, with a validation file,
    4 epochs of 3 steps, the learning rate `auto`, trained to success."""
    from tests.support.training import BASE, sft_example, upload, wait_for, wait_for_evaluation

    client = local_server.client()
    training = upload(client, [sft_example(i) for i in range(24)])
    validation = upload(client, [sft_example(i) for i in range(100, 104)], "valid.jsonl")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training, validation_file=validation, suffix="tune", seed=7,
        metadata={"purpose": "shared-run"},
        integrations=[{"type": "wandb", "wandb": {"project": "tuneserve-tests"}}],
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 4, "batch_size": 8, "lora_rank": 8}}},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    return wait_for_evaluation(client, job.id)


@pytest.fixture(scope="session")
def ray_storage(s3_env: dict[str, str], models_dir: Path) -> Iterator[dict[str, str]]:
    """The PostgreSQL DB and S3 prefix that the Ray cluster's nodes and its API nodes share:
    a GPU node learns them (and the S3 credentials) from its own environment."""
    db_name, url = postgres.create_database()
    env = {**s3_env, "TUNESERVE_DATABASE_URL": url, "TUNESERVE_MODELS_DIR": str(models_dir)}
    env["TUNESERVE_BLOB_URL"] += "/" + random_token(8)
    yield env
    postgres.drop_database(db_name)


@pytest.fixture(scope="session")
def ray_cluster(ray_storage: dict[str, str]) -> Iterator["RayCluster"]:
    from tests.support.ray_cluster import RayCluster

    cluster = RayCluster(ray_storage).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_servers(ray_cluster: "RayCluster", ray_storage: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[TuneserveServer, TuneserveServer]]:
    """Two API nodes on one PostgreSQL + S3, both scheduling jobs onto the Ray cluster,
    started at the same moment; the first also serves chat (its own vLLM)."""
    import sys
    import threading

    env = {**ray_storage, "TUNESERVE_EXECUTOR": "ray",
           "TUNESERVE_RAY_ADDRESS": ray_cluster.address,
           "TUNESERVE_RAY_WORKER_COMMAND": f"{sys.executable} -m training.worker",
           "TUNESERVE_RAY_TINKER_COMMAND": f"{sys.executable} -m training.tinker.trainer",
           "TUNESERVE_RAY_STOP_WAIT_SECONDS": "60",
           "TUNESERVE_WORKER_HEARTBEAT_TIMEOUT": "10"}
    a = TuneserveServer(tmp_path_factory.mktemp("ray-api-a"),
                        env | {"TUNESERVE_SERVING_ENABLED": "true"})
    b = TuneserveServer(tmp_path_factory.mktemp("ray-api-b"), env, api_key=a.api_key)
    errors: list[BaseException] = []

    def start(server: TuneserveServer) -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield a, b
    finally:
        a.stop()
        b.stop()
