"""Settings of the job system (the scheduler in the API process and the workers)."""

from typing import Literal

from pydantic import model_validator

from storage.settings import StorageSettings, json_object


class TrainingSettings(StorageSettings):
    # Where workers run: `local` (a subprocess of this API node) or `ray` (a Ray job on a
    # cluster's GPU nodes, through the Job Submission API).
    executor: Literal["local", "ray"] = "local"
    # Local executor: jobs training at once on this node; the rest wait in `queued`. With
    # Ray, the cluster's resources decide (jobs wait in `queued` until it has room).
    max_concurrent_jobs: int = 1
    # Jobs of one project running (or waiting for a Ray node) at once; 0 means no limit.
    # Runnable jobs are taken round-robin across projects either way.
    max_running_jobs_per_project: int = 0
    # Jobs of one project waiting to run (validating files, queued or paused); creating one
    # more is a 429. 1000 is far more than a batch of experiments needs at once, and keeps
    # one project's backlog (its rows, what the scheduler reads) bounded. 0 means no limit.
    max_queued_jobs_per_project: int = 1000
    # A running job whose worker has not reported for this long is taken as lost.
    worker_heartbeat_timeout: float = 60.0
    # A lost worker is replaced this many times (resuming from its last state) before the
    # job fails.
    max_job_recoveries: int = 3
    # A worker that stopped because the blob store or the DB was unreachable is not a lost
    # worker (nothing counts against the recoveries): the job waits this long, queued, and
    # resumes from its newest saved state, as often as the outage takes.
    outage_retry_seconds: float = 30.0
    # Resumable training state is saved this often (and at every epoch end), so a lost
    # worker costs at most this much training.
    checkpoint_every_seconds: float = 600.0
    scheduler_interval: float = 1.0
    # How long a cancelled worker gets to stop by itself before it is killed.
    cancel_grace_seconds: float = 5.0
    # File validations running at once on this node (each in its own thread); one that takes
    # longer than the timeout fails its job.
    validation_workers: int = 2
    validation_timeout_seconds: float = 1800.0
    # Built-in evaluation of a job with a validation file: base vs fine-tuned answers on up
    # to this many validation examples (and on each kept checkpoint); 0 turns it off.
    eval_max_examples: int = 200
    # Validation examples answered at once during that evaluation.
    eval_batch_size: int = 16

    # Where workers reach an API node (http://host:port), to have the score_model graders of
    # reinforcement jobs judged by the models this deployment serves. An API node tells its
    # local workers its own address; on Ray set it in each GPU node's environment (a load
    # balancer in front of the API nodes, say).
    api_url: str = ""
    # How long one judge request may take, retries after 429/503 included, before the
    # sample it grades gets a reward of 0 (its error counted in the job's metrics).
    judge_timeout_seconds: float = 120.0

    # Ray executor (the cluster's address, `ray_address`, is in StorageSettings).
    # GPUs each job's worker holds (`entrypoint_num_gpus`); 0 for a CPU-only cluster.
    ray_gpus_per_job: float = 1.0
    # JSON object of extra Ray resources per job (`entrypoint_resources`), e.g.
    # {"accelerator_type:H100": 0.001} to pin a GPU type.
    ray_resources: str = ""
    # JSON object of node labels the worker's node must have (`entrypoint_label_selector`).
    ray_label_selector: str = ""
    # The command a GPU node runs; tuneserve must be installed in its Python.
    ray_worker_command: str = "python -m training.worker"
    # A job Ray holds as PENDING this long, with no node in the cluster that has the
    # resources it asks for, fails saying so (a job only waiting for a busy node waits on).
    ray_placement_timeout: float = 600.0
    # How long Ray waits after SIGTERM before it kills a stopped worker: a pause saves a
    # checkpoint in that time.
    ray_stop_wait_seconds: float = 300.0

    @model_validator(mode="after")
    def _check_ray(self) -> "TrainingSettings":
        if self.executor == "ray" and not self.ray_address:
            raise ValueError("TUNESERVE_EXECUTOR=ray needs TUNESERVE_RAY_ADDRESS (the Ray "
                             "dashboard address, e.g. http://127.0.0.1:8265)")
        self.ray_entrypoint_resources()
        self.ray_entrypoint_label_selector()
        return self

    def ray_entrypoint_resources(self) -> dict[str, float] | None:
        return json_object(self.ray_resources, "TUNESERVE_RAY_RESOURCES")

    def ray_entrypoint_label_selector(self) -> dict[str, str] | None:
        return json_object(self.ray_label_selector, "TUNESERVE_RAY_LABEL_SELECTOR")
