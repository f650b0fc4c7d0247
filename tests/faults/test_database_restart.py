"""PostgreSQL stops for a few seconds while a job trains: the job still completes (its worker
stops for the outage without failing the job, and another attempt resumes it once the DB is
back), and the API answers again as soon as the DB does. The PostgreSQL that stops is a
cluster of this module's own: the machine's serves other tests' servers, and whatever else
runs here (`make run`)."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.ids import random_token
from tests.support.ports import free_port
from tests.support.server import TuneserveServer
from tests.support.training import BASE, events, sft_example, upload, wait_for, wait_for_event

pytestmark = [pytest.mark.server, pytest.mark.training]

VERSION = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def _postgresql(cluster: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, cluster, action,
                    *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)


@pytest.fixture(scope="module")
def own_postgresql() -> Iterator[tuple[str, str]]:
    """A PostgreSQL cluster on a free loopback port with trust auth, as the machine's is:
    (its name, the SQLAlchemy URL of its `postgres` database)."""
    name, port = "restart" + random_token(8).lower(), free_port()
    subprocess.run(["pg_createcluster", "-p", str(port), "--start", "--start-conf", "manual",
                    VERSION, name, "--", "--auth=trust"], check=True, capture_output=True,
                   timeout=120)
    try:
        yield name, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", VERSION, name], check=False,
                       capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
              own_postgresql: tuple[str, str]) -> Iterator[TuneserveServer]:
    server = TuneserveServer(tmp_path_factory.mktemp("pg-restart"), {
        "TUNESERVE_DATABASE_URL": own_postgresql[1], "TUNESERVE_MODELS_DIR": str(models_dir),
        "TUNESERVE_WORKER_HEARTBEAT_TIMEOUT": "20", "TUNESERVE_OUTAGE_RETRY_SECONDS": "2"}).start()
    yield server
    server.stop()


def test_a_job_completes_across_a_database_restart(pg_server: TuneserveServer,
                                                   own_postgresql: tuple[str, str]) -> None:
    client = pg_server.client()
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(24)]), seed=5,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4}}})  # 18 steps
    wait_for_event(client, job.id, "Step 2/", timeout=300)
    # Down for several training steps, so the worker's per-step writes meet the outage.
    _postgresql(own_postgresql[0], "stop")
    try:
        time.sleep(8)
    finally:
        _postgresql(own_postgresql[0], "start")
    deadline = time.monotonic() + 60
    while True:  # the API is back with the DB (its pool drops the dead connections)
        try:
            client.fine_tuning.jobs.retrieve(job.id)
            break
        except Exception:
            assert time.monotonic() < deadline, "the API did not recover from the restart"
            time.sleep(1)
    done = wait_for(client, job.id, timeout=600)
    messages = [e.message for e in events(client, job.id)]
    assert done.status == "succeeded", (done.error, messages)
    # The outage did reach the worker, which stopped; the job waited it out and resumed.
    assert any("Training was interrupted: the storage or the database was unreachable" in m
               for m in messages), messages
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
