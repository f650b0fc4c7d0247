"""The blob store goes away for a while (SeaweedFS frozen: connections hang, as a black-holed
endpoint does): requests that need it get a clear 503 with `retry-after` within the S3
timeouts, everything else keeps answering, and once it is back every byte stored before is
there and the refused upload goes through, with nothing half-stored left visible."""

import os
import signal
import time
from collections.abc import Iterator

import openai
import pytest

from tests.support.seaweedfs import SeaweedFS
from tests.support.server import TuneserveServer


@pytest.fixture(scope="module")
def frozen_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[SeaweedFS, TuneserveServer]]:
    weed = SeaweedFS().start()
    server = TuneserveServer(tmp_path_factory.mktemp("outage"), weed.env("outage") | {
        "TUNESERVE_S3_CONNECT_TIMEOUT": "1", "TUNESERVE_S3_READ_TIMEOUT": "2"}).start()
    yield weed, server
    server.stop()
    weed.stop()


def _freeze(weed: SeaweedFS, frozen: bool) -> None:
    assert weed.proc is not None
    os.killpg(weed.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def test_a_blob_store_outage_is_a_503_and_loses_nothing(
        frozen_store: tuple[SeaweedFS, TuneserveServer]) -> None:
    weed, server = frozen_store
    client = server.client()
    before = os.urandom(256 * 1024)
    refused = os.urandom(300 * 1024)
    kept = client.files.create(file=("before.bin", before), purpose="batch")
    _freeze(weed, True)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.files.create(file=("during.bin", refused), purpose="batch")
        assert time.monotonic() - started < 60
        assert info.value.status_code == 503
        assert info.value.response.headers["retry-after"] == "10"
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "storage_unavailable", error
        assert "seaweed" not in str(error).lower() and "127.0.0.1" not in str(error)
        # What needs only the DB still answers.
        assert [f.id for f in client.files.list()] == [kept.id]
        with pytest.raises(openai.APIStatusError) as read:
            client.files.content(kept.id).read()
        assert read.value.status_code == 503
    finally:
        _freeze(weed, False)
    assert client.files.content(kept.id).read() == before
    again = client.files.create(file=("during.bin", refused), purpose="batch")
    assert client.files.content(again.id).read() == refused
    assert sorted(f.id for f in client.files.list()) == sorted([kept.id, again.id])
