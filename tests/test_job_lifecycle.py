"""Cancel, pause/resume, and recovery from killed workers and a killed API, on real training."""

import math
import os
import signal
import time
from pathlib import Path

import openai
import psutil
import pytest

from tests.support.server import TuneserveServer
from tests.support.training import (
    BASE,
    dpo_example,
    events,
    sft_example,
    train_steps,
    upload,
    wait_for,
    wait_for_event,
    worker_processes,
)

# Twelve examples (a training file's ten at least): what each test checks needs steps and
# checkpoints, not compute.
TRAINING = [sft_example(i) for i in range(12)]


def _worker(job_id: str) -> psutil.Process | None:
    return next(iter(worker_processes(job_id)), None)


def _wait_gone(job_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _worker(job_id) is not None:
        assert time.monotonic() < deadline, f"the worker of {job_id} is still running"
        time.sleep(0.2)


def _start(client: openai.OpenAI, n_epochs: int, batch_size: int) -> str:
    return client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, TRAINING), seed=3,
        # 16-bit LoRA: the same lifecycle, several times faster on a CPU than QLoRA.
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": n_epochs, "batch_size": batch_size, "use_qlora": False}}},
    ).id


def test_cancel_stops_the_worker_and_keeps_no_model(local_server: TuneserveServer) -> None:
    client = local_server.client()
    job_id = _start(client, n_epochs=5, batch_size=2)
    wait_for_event(client, job_id, "Checkpoint created")
    cancelled = client.fine_tuning.jobs.cancel(job_id)
    assert cancelled.status == "cancelled"
    _wait_gone(job_id)
    # Its checkpoints and their adapters go once the worker is down.
    deadline = time.monotonic() + 10
    while list(client.fine_tuning.jobs.checkpoints.list(job_id)):
        assert time.monotonic() < deadline, "checkpoints of a cancelled job were kept"
        time.sleep(0.2)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert not [m for m in client.models.list() if job_id[-8:] in m.id]
    assert not list((local_server.data_dir / "blobs" / "jobs").rglob(f"*{job_id}*/*"))
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job_id)


def test_cancel_a_queued_job(local_server: TuneserveServer) -> None:
    client = local_server.client()
    job = client.fine_tuning.jobs.create(model=BASE, training_file=upload(client, TRAINING))
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    time.sleep(2)  # the scheduler must not pick it up
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert _worker(job.id) is None


def _paused_after_step_3(client: openai.OpenAI, job_id: str) -> int:
    """Pauses the job once it trained step 3; the step it paused at."""
    wait_for_event(client, job_id, "Step 3/")
    # Answered at once, as OpenAI does; the worker saves its state, then the job is paused.
    assert client.fine_tuning.jobs.pause(job_id).status == "pausing"
    assert wait_for(client, job_id, ("paused",), timeout=60).status == "paused"
    _wait_gone(job_id, timeout=10)
    at = train_steps(client, job_id)[-1]
    assert at >= 3
    return at


def test_pause_then_resume_continues_from_the_checkpoint(local_server: TuneserveServer) -> None:
    client = local_server.client()
    job_id = _start(client, n_epochs=2, batch_size=1)  # 24 steps
    at = _paused_after_step_3(client, job_id)
    assert at < 24
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job_id)

    assert client.fine_tuning.jobs.resume(job_id).status in ("queued", "running")
    done = wait_for(client, job_id)
    assert done.status == "succeeded", done.error
    steps = train_steps(client, job_id)
    # The step count keeps going: nothing before the pause is trained again.
    assert steps == list(range(1, 25))
    messages = [e.message for e in events(client, job_id)]
    assert any(f"paused at step {at}" in m for m in messages)
    assert any(f"resumed from step {at}" in m for m in messages)


def test_a_resumed_dpo_job_goes_on_from_its_trained_adapter(
        local_server: TuneserveServer) -> None:
    client = local_server.client()
    # Plain DPO (no SFT term): while the policy is its reference the loss is ln 2 exactly.
    job_id = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [dpo_example(i) for i in range(10)]), seed=3,
        method={"type": "dpo", "dpo": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 1, "rpo_alpha": 0, "use_qlora": False}}},
    ).id  # 20 steps
    at = _paused_after_step_3(client, job_id)
    assert at < 20
    client.fine_tuning.jobs.resume(job_id)
    done = wait_for(client, job_id)
    assert done.status == "succeeded", done.error
    loss = {e.data["step"]: e.data["train_loss"] for e in events(client, job_id)
            if e.type == "metrics" and "train_loss" in (e.data or {})}
    assert sorted(loss) == list(range(1, 21))
    assert loss[1] == pytest.approx(math.log(2), abs=1e-3)
    # Resumed from the trained adapter, not from a fresh one equal to its reference.
    assert loss[at + 1] != pytest.approx(math.log(2), abs=1e-3), loss


def test_killed_worker_resumes_from_its_last_checkpoint(
    local_server: TuneserveServer, sft_job: object,
) -> None:
    client = local_server.client()
    job_id = _start(client, n_epochs=3, batch_size=4)  # 9 steps, checkpoints at 3 and 6
    wait_for_event(client, job_id, "Checkpoint created at step 3")
    worker = _worker(job_id)
    assert worker is not None
    # After the node's first job (`sft_job`), workers are forked from the preloaded launcher,
    # which hears of their exit (here a kill) for the scheduler.
    assert "training.launcher" in worker.parent().cmdline()
    worker.send_signal(signal.SIGKILL)
    done = wait_for(client, job_id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(client, job_id)]
    assert any("interrupted" in m for m in messages)
    steps = train_steps(client, job_id)
    assert steps[-1] == 9 and set(steps) == set(range(1, 10))


def test_killed_worker_before_any_saved_state_starts_again_and_succeeds(
    local_server: TuneserveServer,
) -> None:
    client = local_server.client()
    job_id = _start(client, n_epochs=1, batch_size=4)  # 3 steps, state only at the end
    wait_for_event(client, job_id, "Fine-tuning job started")
    deadline = time.monotonic() + 60
    while (worker := _worker(job_id)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    done = wait_for(client, job_id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(client, job_id)]
    assert any("starting again from the beginning" in m for m in messages)
    assert train_steps(client, job_id)[-1] == 3


def test_api_and_worker_killed_mid_job_then_recovery(
    tmp_path: Path, local_server: TuneserveServer
) -> None:
    # Its own server, so killing it leaves the shared one alone.
    server = TuneserveServer(tmp_path / "data", {
        k: v for k, v in local_server.env.items() if k.startswith("TUNESERVE_")
        and k not in ("TUNESERVE_DATA_DIR", "TUNESERVE_BOOTSTRAP_API_KEY",
                      "TUNESERVE_SERVING_ENABLED")})
    server.start()
    try:
        client = server.client()
        job_id = _start(client, n_epochs=3, batch_size=4)  # 9 steps, checkpoints at 3 and 6
        wait_for_event(client, job_id, "Checkpoint created at step 3")
        worker = _worker(job_id)
        assert worker is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        worker.send_signal(signal.SIGKILL)
        server.proc.wait()  # type: ignore[union-attr]

        server.start()  # the job is still `running` in the DB, with nobody training it
        done = wait_for(server.client(), job_id)
        assert done.status == "succeeded", done.error
        assert train_steps(server.client(), job_id)[-1] == 9
        assert any("interrupted" in e.message for e in events(server.client(), job_id))
    finally:
        server.stop()
