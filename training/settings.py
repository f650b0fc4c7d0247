"""Settings of the job system (the scheduler in the API process and the workers)."""

from typing import Literal

from pydantic import Field, model_validator

from storage.settings import StorageSettings, json_object


class TrainingSettings(StorageSettings):
    executor: Literal["local", "ray"] = Field(
        "local",
        description=(
            "Where workers run: `local` (a subprocess of this API node) or `ray` (a Ray job on a "
            "cluster's GPU nodes, through the Job Submission API; see docs/scale-out.md)."
        ),
    )
    max_concurrent_jobs: int = Field(
        1,
        description=(
            "Local executor: jobs training at once on this node; the rest wait in `queued`. With "
            "Ray, the cluster's resources decide (jobs wait in `queued` until it has room)."
        ),
    )
    tinker_max_trainers: int = Field(
        2,
        ge=1,
        description=(
            "Tinker API: training runs whose trainer (one process holding the run's LoRA in "
            "memory while its session lives) may run on this node at once. A request for "
            "another run is answered 429 (the SDK waits and retries) until one's session ends."
        ),
    )
    tinker_cpu_threads: int = Field(
        1,
        ge=1,
        description=(
            "Tinker API, on a node without CUDA: the torch threads of a trainer started cold "
            "(before the preloaded launcher is ready, or with `worker_preload` off). One by "
            "default: a cold trainer beside vLLM's CPU engine, whose OpenMP threads are bound "
            "to every core and spin while they wait, waits on them at every step with more "
            "(measured on 2 cores: a forward_backward 1.1-2.0 s with one thread, 2.0-4.0 s with "
            "two). A trainer forked from the launcher computes with a job worker's threads "
            "(there two threads measured 1.2-1.4 s, one 1.8-2.4 s)."
        ),
    )
    max_running_jobs_per_project: int = Field(
        0,
        description=(
            "Jobs of one project running (or waiting for a Ray node) at once, over all nodes; 0 "
            "means no limit. Runnable jobs are taken round-robin across projects either way."
        ),
    )
    max_queued_jobs_per_project: int = Field(
        1000,
        description=(
            "Jobs of one project waiting to run (validating files, queued or paused); creating one "
            "more is a 429 `rate_limit_exceeded`. 1000 is far more than a batch of experiments "
            "needs at once, and keeps one project's backlog (its rows, what the scheduler reads) "
            "bounded. 0 means no limit."
        ),
    )
    worker_heartbeat_timeout: float = Field(
        60.0,
        description=(
            "Seconds: a running job whose worker has not reported for this long is taken as lost."
        ),
    )
    max_job_recoveries: int = Field(
        3,
        description=(
            "A lost worker is replaced this many times (resuming from the newest saved state) "
            "before the job fails `worker_lost`."
        ),
    )
    outage_retry_seconds: float = Field(
        30.0,
        description=(
            "A worker that stopped because the blob store or the DB was unreachable is not a lost "
            "worker (nothing counts against the recoveries): the job waits this long, queued, and "
            "resumes from its newest saved state, as often as the outage takes."
        ),
    )
    checkpoint_every_seconds: float = Field(
        600.0,
        description=(
            "Resumable training state is saved this often (and at every epoch end), so a lost "
            "worker costs at most this much training."
        ),
    )
    worker_preload: bool = Field(
        True,
        description=(
            "Local executor: after the first job, workers are forked from a launcher that has "
            "imported the training libraries once, so a job starts training at once instead of "
            "after 10+ s of imports. Only on nodes without CUDA (CUDA does not survive a fork): "
            "there workers always start cold. The launcher holds about 1 GiB of memory while "
            "this API node runs."
        ),
    )
    scheduler_interval: float = Field(1.0, description="Seconds between scheduler ticks.")
    cancel_grace_seconds: float = Field(
        5.0,
        description="How long a cancelled local worker gets to stop by itself before it is killed.",
    )
    validation_workers: int = Field(
        2,
        description=(
            "File validations running at once on this node, each in its own thread, off the event "
            "loop; a free one goes to the waiting project validating fewest files."
        ),
    )
    validation_timeout_seconds: float = Field(
        1800.0,
        description=(
            "A file validation that runs longer than this fails its job `validation_timeout`."
        ),
    )
    eval_max_examples: int = Field(
        200,
        description=(
            "Built-in evaluation of a job with a validation file: base vs fine-tuned answers on up "
            "to this many validation examples (and on each kept checkpoint); 0 turns it off."
        ),
    )
    eval_batch_size: int = Field(
        16,
        description="Validation examples answered at once during that evaluation.",
    )

    api_url: str = Field(
        "",
        description=(
            "Where workers reach an API node (`http://host:port`), to have the score_model graders "
            "of reinforcement jobs judged by the models this deployment serves. Empty: an API node "
            "that serves tells its local workers its own address (`http://HOST:PORT`, loopback for "
            "a wildcard host); a node that serves nothing, and each Ray GPU node (in its "
            "environment), names a serving one (a load balancer in front of the API nodes, say)."
        ),
    )
    judge_timeout_seconds: float = Field(
        120.0,
        description=(
            "How long one judge request of a reinforcement job may take, retries after "
            "429/502/503/504 and lost connections included, before the sample it grades gets a "
            "reward of 0 (its error counted in the job's `grader_error_rate`)."
        ),
    )

    # Ray executor (the cluster's address, `ray_address`, is in StorageSettings).
    ray_gpus_per_job: float = Field(
        1.0,
        description=(
            "Ray executor: GPUs each job's worker holds (`entrypoint_num_gpus`); 0 for a CPU-only "
            "cluster."
        ),
    )
    ray_resources: str = Field(
        "",
        description=(
            "Ray executor: JSON object of extra Ray resources per job (`entrypoint_resources`), "
            "e.g. `{\"accelerator_type:H100\": 0.001}` to pin a GPU type."
        ),
    )
    ray_label_selector: str = Field(
        "",
        description=(
            "Ray executor: JSON object of node labels the worker's node must have "
            "(`entrypoint_label_selector`)."
        ),
    )
    ray_worker_command: str = Field(
        "python -m training.worker",
        description=(
            "Ray executor: the command a GPU node runs; tuneserve must be installed in its Python."
        ),
    )
    ray_tinker_command: str = Field(
        "python -m training.tinker.trainer",
        description=(
            "Ray executor: the command a GPU node runs for a Tinker training run's trainer (it "
            "gets the GPUs, resources and labels a job's worker gets)."
        ),
    )
    ray_placement_timeout: float = Field(
        600.0,
        description=(
            "Ray executor: a job Ray holds as PENDING this long, with no node in the cluster that "
            "has the resources it asks for, fails `no_capacity` (a job only waiting for a busy "
            "node waits on)."
        ),
    )
    ray_stop_wait_seconds: float = Field(
        300.0,
        description=(
            "Ray executor: how long Ray waits after SIGTERM (cancel, pause) before it kills a "
            "stopped worker: a pause saves a checkpoint in that time."
        ),
    )

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
