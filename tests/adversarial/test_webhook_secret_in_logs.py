"""A receiver that carries its secret in the URL (Slack's do) is down, and every failed attempt
is logged (security review L6): whoever reads the server's log must not get the secret. The
log names the endpoint and the URL's scheme and host only."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.conftest import start_control_plane, stop_control_plane
from tests.support.receivers import CountingReceiver
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example, upload

SECRET = "SECRETtoken9f3b2c"


@pytest.fixture
def receiver() -> Iterator[CountingReceiver]:
    """Answers every POST 500, and counts them."""
    with CountingReceiver(status=500) as r:
        yield r


@pytest.fixture
def server(tmp_path: Path, models_dir: Path) -> Iterator[TuneserveServer]:
    """Sends to loopback (where the receiver is), retrying every half second; trains the
    default base without serving it, so a job can be made (and cancelled at once)."""
    srv, name = start_control_plane(tmp_path, "sqlite", {
        "TUNESERVE_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "TUNESERVE_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.1",
        "TUNESERVE_WEBHOOK_RETRY_DELAYS": "[0.5]",
        "TUNESERVE_WEBHOOK_TIMEOUT_SECONDS": "2",
        "TUNESERVE_MODELS_DIR": str(models_dir),
        "TUNESERVE_TRAIN_UNSERVED_BASES": "true",
    })
    yield srv
    stop_control_plane(srv, name)


def test_failed_deliveries_do_not_log_the_urls_secret(receiver: CountingReceiver,
                                                      server: TuneserveServer) -> None:
    client = server.client()
    url = (f"http://hook:{SECRET}@127.0.0.1:{receiver.port}"
           f"/services/T000/B000/{SECRET}?token={SECRET}")
    hook = client.webhooks.create(name="slack", url=url,
                                  event_types=["fine_tuning.job.cancelled"])
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(10)]))
    client.fine_tuning.jobs.cancel(job.id)

    deadline = time.monotonic() + 30
    while receiver.posts < 3:
        assert time.monotonic() < deadline, f"{receiver.posts} attempts after 30 s"
        time.sleep(0.1)
    time.sleep(0.5)  # the last attempt's line is written
    log = server.log_path.read_text(errors="replace")
    assert SECRET not in log
    assert hook.id in log  # the failed attempts are logged, by their endpoint
