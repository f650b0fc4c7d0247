"""What a lost or doubled worker may not do: two workers for one job leave exactly one
adapter and a model that serves; a worker killed while it uploads its state to S3 leaves the
previous complete state, which the next attempt resumes from."""

import signal
import sqlite3
import time

from tests.support.chat import wait_for_engine
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import TuneserveServer
from tests.support.training import (
    BASE,
    events,
    sft_example,
    train_steps,
    upload,
    wait_for,
    wait_for_event,
    worker_processes,
)

TRAINING = [sft_example(i) for i in range(24)]


def test_two_workers_for_one_job_leave_one_adapter_and_a_model_that_serves(
    local_server: TuneserveServer,
) -> None:
    client = local_server.client()
    wait_for_engine(local_server)  # its start-up would hold the cores this test times
    job_id = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, TRAINING), seed=11,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "use_qlora": False}}},  # 6 steps
    ).id
    wait_for_event(client, job_id, "Step 1/")
    (first,) = worker_processes(job_id)
    # What a second scheduler does when it takes a live worker for lost (a stalled heartbeat,
    # another API node): the job goes back to the queue, and this node starts another worker.
    with sqlite3.connect(local_server.data_dir / "tuneserve.db", timeout=30) as db:
        db.execute("UPDATE fine_tuning_jobs SET status='queued', worker=NULL WHERE id=?",
                   (job_id,))
    deadline = time.monotonic() + 60
    while len(worker_processes(job_id)) < 2 and first.is_running():
        assert time.monotonic() < deadline, "no second worker was started"
        time.sleep(0.2)
    # The first notices it lost the job and stops after its current step, touching nothing.
    first.wait(timeout=180)
    done = wait_for(client, job_id)
    assert done.status == "succeeded", done.error
    adapters = local_server.data_dir / "blobs" / "adapters"
    finals = [p for p in adapters.rglob(f"{job_id}-a*") if "ckpt" not in p.name]
    assert len(finals) == 1 and (finals[0] / "adapter_config.json").is_file()
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model  # type: ignore[arg-type]
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, max_tokens=8,
        messages=[{"role": "user", "content": "What is 5 plus 5?"}])
    assert reply.choices[0].message.content


def test_worker_killed_while_uploading_its_state_resumes_from_the_previous_one(
    s3_server: TuneserveServer, seaweedfs: SeaweedFS,
) -> None:
    client = s3_server.client()
    job_id = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, TRAINING), seed=13,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "use_qlora": False}}},  # 18 steps, state at 6/12/18
    ).id
    bucket, _, prefix = s3_server.env["TUNESERVE_BLOB_URL"].removeprefix("s3://").partition("/")
    s3 = seaweedfs.client()

    def state_keys() -> list[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/jobs/")
        return [o["Key"] for o in listing.get("Contents", []) if f"/{job_id}/state/" in o["Key"]]

    # Freeze the worker the moment a state after the first is half uploaded: its files are
    # there, its manifest is not. Then kill it.
    caught = None
    deadline = time.monotonic() + 600
    while caught is None:
        assert time.monotonic() < deadline, "never saw a state upload in progress"
        keys = state_keys()
        manifests = {k for k in keys if k.endswith(".manifest.json")}
        staging = {k.split("/state/")[1].split("/")[0] for k in keys if "/state/a" in k
                   and not k.endswith(".manifest.json")}
        for name in staging:
            if manifests and not any(m.endswith(f"/{name}.manifest.json") for m in manifests):
                workers = worker_processes(job_id)
                for w in workers:
                    w.send_signal(signal.SIGSTOP)
                if not any(k.endswith(f"/{name}.manifest.json") for k in state_keys()):
                    for w in workers:
                        w.send_signal(signal.SIGKILL)
                    caught = name
                else:
                    for w in workers:
                        w.send_signal(signal.SIGCONT)
                break
        time.sleep(0.02)
    interrupted_step = int(caught.split("-step")[1])
    done = wait_for(client, job_id, timeout=600)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(client, job_id)]
    resumed = [m for m in messages if m.startswith("Fine-tuning job resumed from step")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) < interrupted_step
    assert set(train_steps(client, job_id)) == set(range(1, 19))
    # A finished job keeps no state, complete or not.
    assert state_keys() == []
