"""The blob store goes away for a while (SeaweedFS frozen: connections hang, as a black-holed
endpoint does): requests that need it get a clear 503 with `retry-after` within the S3
timeouts, everything else keeps answering, and once it is back every byte stored before is
there and the refused upload goes through, with nothing half-stored left visible. The same
for a job's checkpoint upload (the job completes) and a fine-tuned model's first request,
whose adapter fetch meets the outage (then it is served, from a whole copy)."""

import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.seaweedfs import SeaweedFS
from tests.support.server import TuneserveServer
from tests.support.training import BASE, events, sft_example, upload, wait_for, wait_for_event

pytestmark = [pytest.mark.server, pytest.mark.training]


@pytest.fixture(scope="module")
def frozen_store(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[
        tuple[SeaweedFS, TuneserveServer]]:
    weed = SeaweedFS().start()
    server = TuneserveServer(tmp_path_factory.mktemp("outage"), weed.env("outage") | {
        "TUNESERVE_MODELS_DIR": str(models_dir), "TUNESERVE_WORKER_HEARTBEAT_TIMEOUT": "20",
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


def test_a_job_whose_checkpoint_upload_meets_the_outage_completes(
        frozen_store: tuple[SeaweedFS, TuneserveServer]) -> None:
    weed, server = frozen_store
    client = server.client()
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [sft_example(i) for i in range(24)]), seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4}}})  # 6 steps an epoch, a checkpoint at each end
    wait_for_event(client, job.id, "Step 4/", timeout=300)
    _freeze(weed, True)  # the first epoch's checkpoint upload comes in the outage
    try:
        time.sleep(15)
    finally:
        _freeze(weed, False)
    done = wait_for(client, job.id, timeout=600)
    assert done.status == "succeeded", (done.error, [e.message for e in events(client, job.id)])
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert sorted(c.step_number for c in checkpoints) == [6, 12, 18]
    listed = {m.id for m in client.models.list()}
    assert {done.fine_tuned_model, *(c.fine_tuned_model_checkpoint for c in checkpoints)} <= listed


@pytest.fixture
def serving_node(frozen_store: tuple[SeaweedFS, TuneserveServer]) -> TuneserveServer:
    """The same node restarted with its model engine (started only now: it would slow the
    training above), ready."""
    _, server = frozen_store
    server.stop()
    server.env["TUNESERVE_SERVING_ENABLED"] = "true"
    server.start()
    deadline = time.monotonic() + 300
    while httpx.get(server.base_url.removesuffix("/v1") + "/ready").status_code != 200:
        assert time.monotonic() < deadline, "the engine did not become ready"
        time.sleep(1)
    return server


def test_a_model_whose_adapter_fetch_meets_the_outage_is_a_503_then_served(
        frozen_store: tuple[SeaweedFS, TuneserveServer], serving_node: TuneserveServer) -> None:
    weed, server = frozen_store[0], serving_node
    client = server.client()
    # A checkpoint of the job above: never asked for, so not on this node's disk yet.
    model = next(m.id for m in client.models.list() if m.id.endswith(":ckpt-step-6"))
    ask = {"model": model, "max_tokens": 4,
           "messages": [{"role": "user", "content": "What is 2 plus 2?"}]}
    _freeze(weed, True)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert time.monotonic() - started < 60
        assert info.value.status_code == 503
        assert info.value.response.headers["retry-after"] == "10"
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "storage_unavailable", error
        assert "lora-" not in str(error) and "127.0.0.1" not in str(error)
        # The base model needs no blob: it answers through the outage.
        assert client.chat.completions.create(**{**ask, "model": BASE}).choices  # type: ignore[call-overload]
    finally:
        _freeze(weed, False)
    assert client.chat.completions.create(**ask).choices[0].message.content  # type: ignore[call-overload]
    # What the engine loaded is the stored adapter, byte for byte.
    with sqlite3.connect(server.data_dir / "tuneserve.db") as db:
        (prefix,) = db.execute("SELECT adapter_prefix FROM fine_tuned_models WHERE id = ?",
                               (model,)).fetchone()
    cached = server.data_dir / "adapter-cache" / (
        "lora-" + hashlib.sha256(model.encode()).hexdigest()[:24])
    s3, bucket = weed.client(), "outage"
    stored = {o["Key"].rsplit("/", 1)[1]: o["Key"]
              for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert "adapter_model.safetensors" in stored
    assert {f.name for f in cached.iterdir()} == set(stored)
    for name, key in stored.items():
        assert (cached / name).read_bytes() == s3.get_object(Bucket=bucket, Key=key)["Body"].read()
