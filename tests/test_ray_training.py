"""Training on a real Ray cluster (loopback: a head without GPUs, a node with one logical GPU)
through two API nodes on one PostgreSQL + S3, driven by the official client: jobs run as Ray
jobs on the GPU node, each exactly once, and are served; cancel, pause/resume and a killed API
act on them through Ray. Training is tiny (a step or a few) so the suite stays fast."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import psycopg
import pytest

from tests.support.chat import engine_process, wait_for_engine
from tests.support.ray_cluster import RayCluster
from tests.support.server import TuneserveServer
from tests.support.tinker_data import datum, tinker_key, tinker_root
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

Servers = tuple[TuneserveServer, TuneserveServer]


class RayJobWatcher:
    """Records the Ray jobs the cluster holds while a test runs, with where they ran
    (tuneserve deletes a job's record once the outcome is in its DB; a listing under load
    can miss one, so counts come from `RayCluster.driver_logs`)."""

    def __init__(self, cluster: RayCluster) -> None:
        self.client = cluster.client()
        self.seen: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RayJobWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            try:
                listing = self.client.list_jobs()
            except Exception:  # a slow dashboard under load: look again
                continue
            for job in listing:
                if job.submission_id:
                    self.seen[job.submission_id] = job

    def of(self, job_id: str, kind: str = "job") -> list[Any]:
        """The Ray jobs of a tuneserve job (or, `kind` "tinker_run", of a Tinker run)."""
        return [j for j in self.seen.values()
                if (j.metadata or {}).get(f"tuneserve_{kind}") == job_id]


def _tiny_job(client: openai.OpenAI, training_file: str, **hp: int) -> str:
    return client.fine_tuning.jobs.create(
        model=BASE, training_file=training_file, seed=5,
        # 16-bit LoRA: on a CPU it loads and trains several times faster than QLoRA.
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 10, "use_qlora": False, **hp}}},
    ).id


def _started(client: openai.OpenAI, job_id: str) -> int:
    return sum(e.message == "Fine-tuning job started" for e in events(client, job_id))


def test_api_nodes_started_together_migrate_and_bootstrap_once(
    ray_servers: Servers, ray_storage: dict[str, str]
) -> None:
    a, b = ray_servers
    url = ray_storage["TUNESERVE_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
    # One key works on both nodes: they share the DB.
    assert a.client().models.list() and b.client().models.list()


def test_jobs_created_on_two_api_nodes_each_train_once_on_the_gpu_node_and_are_served(
    ray_servers: Servers, ray_cluster: RayCluster
) -> None:
    a, b = ray_servers
    training = upload(a.client(), [sft_example(i) for i in range(10)])
    # One job per node, created at once: both schedulers race for each of them, and one
    # node's job queues behind the other's on the one GPU node (each is a cold worker start,
    # ~20 s here: two show the race and the queue as well as four did).
    jobs = 2
    with RayJobWatcher(ray_cluster) as ray_jobs:
        with ThreadPoolExecutor(jobs) as pool:
            ids = list(pool.map(lambda i: _tiny_job((a, b)[i % 2].client(), training),
                                range(jobs)))
        done = [wait_for(b.client(), job_id, timeout=600) for job_id in ids]
    assert [j.status for j in done] == ["succeeded"] * jobs, [j.error for j in done]
    for job_id in ids:
        runs = ray_cluster.driver_logs(job_id)
        assert len(runs) == 1, f"{job_id} ran as {runs} in Ray"
        assert _started(a.client(), job_id) == 1
    seen = [run for job_id in ids for run in ray_jobs.of(job_id)]
    assert seen and all(run.driver_node_id in ray_cluster.gpu_node_ids for run in seen)
    wait_for_engine(a)
    reply = a.client().chat.completions.create(
        model=done[0].fine_tuned_model, max_tokens=8,
        messages=[{"role": "user", "content": "What is 3 plus 3?"}])
    assert reply.model == done[0].fine_tuned_model and reply.choices[0].message.content

    # Ray's records go once tuneserve's DB holds the outcome and the worker has exited.
    deadline = time.monotonic() + 120
    while {j.submission_id for j in ray_cluster.client().list_jobs()} & set(ray_jobs.seen):
        assert time.monotonic() < deadline, "finished Ray jobs were not deleted"
        time.sleep(0.5)


def test_cancel_stops_the_ray_job_and_keeps_nothing(
    ray_servers: Servers, ray_cluster: RayCluster
) -> None:
    a, _ = ray_servers
    client = a.client()
    job_id = _tiny_job(client, upload(client, [sft_example(i) for i in range(24)]),
                       n_epochs=5, batch_size=2)
    wait_for_event(client, job_id, "Step 2/")
    assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"
    # Ray stops the worker (SIGTERM), and its record goes once the job is released.
    deadline = time.monotonic() + 60
    while worker_processes(job_id) or [
            j for j in ray_cluster.client().list_jobs()
            if (j.metadata or {}).get("tuneserve_job") == job_id]:
        assert time.monotonic() < deadline, "the Ray job was not stopped"
        time.sleep(0.3)
    assert len(ray_cluster.driver_logs(job_id)) == 1
    assert train_steps(client, job_id)[-1] < 60
    deadline = time.monotonic() + 30
    while list(client.fine_tuning.jobs.checkpoints.list(job_id)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "cancelled" and job.fine_tuned_model is None


def test_pause_and_resume_through_ray_train_every_step_once(
    ray_servers: Servers, ray_cluster: RayCluster
) -> None:
    a, b = ray_servers
    client = a.client()
    job_id = _tiny_job(client, upload(client, [sft_example(i) for i in range(24)]),
                       n_epochs=2, batch_size=4)  # 12 steps
    wait_for_event(client, job_id, "Step 2/")
    assert client.fine_tuning.jobs.pause(job_id).status == "pausing"
    assert wait_for(client, job_id, ("paused",), timeout=90).status == "paused"
    at = train_steps(client, job_id)[-1]
    assert at < 12
    assert b.client().fine_tuning.jobs.resume(job_id).status == "queued"
    done = wait_for(client, job_id, timeout=300)
    assert done.status == "succeeded", done.error
    assert train_steps(client, job_id) == list(range(1, 13))
    assert len(ray_cluster.driver_logs(job_id)) == 2  # one Ray job per attempt
    assert any(f"resumed from step {at}" in e.message for e in events(client, job_id))


def test_a_tinker_run_trains_in_a_ray_job_on_the_gpu_node(
    ray_servers: Servers, ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tinker

    from training.executors import TINKER_TRAINER

    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    a, b = ray_servers
    key = tinker_key(a, "tinker-ray")
    client = tinker.ServiceClient(base_url=tinker_root(a), api_key=key)
    with RayJobWatcher(ray_cluster) as ray_jobs:
        training = client.create_lora_training_client(base_model=BASE, rank=8).result()
        data = [datum(list(range(200, 216)))]
        losses = []
        for _ in range(3):
            step = training.forward_backward(data, "cross_entropy")
            training.optim_step(tinker.AdamParams(learning_rate=2e-3)).result()
            losses.append(step.result().metrics["loss:sum"])
        assert losses[-1] < losses[0], losses
        # The other API node hears the same run (its answers come through the shared DB).
        other_node = tinker.RestClient(base_url=tinker_root(b), api_key=key)
        run = other_node.get_training_run(training.model_id).result()
        assert run.training_run_id == training.model_id
        # One trainer, a Ray job on the GPU node (here a process of the loopback cluster),
        # not a process of either API node or their launchers.
        trainers = worker_processes(training.model_id, TINKER_TRAINER.module)
        api_nodes = {s.proc.pid for s in (a, b) if s.proc is not None}
        assert len(trainers) == 1
        assert not api_nodes & {p.pid for p in trainers[0].parents()}
        assert not any("training.launcher" in " ".join(p.cmdline())
                       for p in trainers[0].parents())
        assert len(ray_cluster.driver_logs(TINKER_TRAINER.submission_id(training.model_id, 1)
                                           .removesuffix("-attempt-1"))) == 1
        client.close("success").result()
        deadline = time.monotonic() + 60
        while not (seen := ray_jobs.of(training.model_id, "tinker_run")) or \
                str(seen[0].status) not in ("SUCCEEDED", "JobStatus.SUCCEEDED"):
            # Its session ended: the trainer exits and frees the GPU for jobs.
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
    assert seen[0].driver_node_id in ray_cluster.gpu_node_ids


def test_killed_api_nodes_leave_the_ray_job_training_and_a_restarted_one_reports_it(
    ray_servers: Servers, ray_cluster: RayCluster
) -> None:
    # Last in this module: it leaves the serving node down.
    a, b = ray_servers
    client = b.client()
    job_id = _tiny_job(client, upload(client, [sft_example(i) for i in range(24)]),
                       n_epochs=1, batch_size=2)  # 12 steps
    wait_for_event(client, job_id, "Step 1/")
    wait_for_engine(a)
    engine = engine_process(a)
    for server in (a, b):
        os.killpg(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        server.proc.wait()  # type: ignore[union-attr]
    # Node a's vLLM (in a session of its own) does not outlive the API that managed it.
    engine.wait(timeout=60)
    ray_client = ray_cluster.client()
    (ray_job,) = [j for j in ray_client.list_jobs()
                  if (j.metadata or {}).get("tuneserve_job") == job_id]
    time.sleep(2)
    assert ray_client.get_job_status(ray_job.submission_id).value == "RUNNING"
    b.start()
    done = wait_for(b.client(), job_id, timeout=300)
    assert done.status == "succeeded", done.error
    assert _started(b.client(), job_id) == 1  # it was never restarted
    assert not any("interrupted" in e.message for e in events(b.client(), job_id))



def test_the_executor_knows_what_no_node_can_place(
    ray_cluster: RayCluster, ray_storage: dict[str, str]
) -> None:
    from training.executors.ray import RayExecutor
    from training.settings import TrainingSettings

    def executor(**values: object) -> RayExecutor:
        return RayExecutor(TrainingSettings(executor="ray", ray_address=ray_cluster.address,
                                            **values))  # type: ignore[arg-type]

    assert executor().placeable("ftjob-x", 1)
    assert not executor(ray_gpus_per_job=2).placeable("ftjob-x", 1)
    assert not executor(ray_resources='{"accelerator_type:H100": 0.001}').placeable("ftjob-x", 1)
    # What the cluster runs at once: one GPU node, one GPU a job; none at two GPUs a job;
    # unbounded for jobs that need no GPU.
    assert (executor().capacity(), executor(ray_gpus_per_job=2).capacity()) == (1, 0)
    assert executor(ray_gpus_per_job=0).capacity() is None
    # No secrets travel with the job: its node's environment has them.
    options = executor().entrypoint_options("ftjob-x", 3)
    assert options["submission_id"] == "ftjob-x-attempt-3"
    assert options["entrypoint_num_gpus"] == 1
    sent = str(options)
    assert all(value not in sent for key, value in ray_storage.items()
               if key.startswith(("AWS_", "TUNESERVE_DATABASE")))
    # A Tinker run's trainer asks for what a job's worker asks for, under its own ids.
    from training.executors import TINKER_TRAINER

    trainer = RayExecutor(TrainingSettings(executor="ray", ray_address=ray_cluster.address),
                          TINKER_TRAINER).entrypoint_options("s1:train:0", 2)
    assert trainer["submission_id"] == "tinker-s1_train_0-attempt-2"
    assert trainer["entrypoint"] == "python -m training.tinker.trainer s1:train:0 2"
    assert trainer["entrypoint_num_gpus"] == options["entrypoint_num_gpus"]
    assert trainer["metadata"]["tuneserve_tinker_run"] == "s1:train:0"
