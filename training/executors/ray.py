"""Workers as Ray jobs on a Ray cluster's GPU nodes, through Ray's Job Submission API.

One Ray job per attempt, with the submission id `{job id}-attempt-{n}`: Ray refuses a reused
id, so an attempt cannot be started twice. The worker runs on a node that has the resources
it asks for (`entrypoint_num_gpus`, which also sets its CUDA_VISIBLE_DEVICES), reads the
blob store and the DB through that node's own environment (no credentials travel in the
job's runtime env) and reports to the DB like a local worker. The API process is only an
HTTP client of the Ray dashboard; a restarted API finds its jobs by their ids."""

import logging
import shlex
import time
from typing import TYPE_CHECKING, Any

from training.executors.base import (
    WORKER,
    ExecutorUnavailable,
    Program,
    WorkerInfo,
    WorkerState,
)
from training.settings import TrainingSettings

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("tuneserve.scheduler")


# Ray 2.60 writes a job's record again (as FAILED) when it is deleted while its supervisor is
# still winding down: deleted right at SUCCEEDED, the record was back a second later; deleted
# 5 s after, it stayed gone. So a record is deleted this long after the job is forgotten.
DELETE_GRACE_SECONDS = 10.0
# How long the cluster's capacity (from the dashboard) is reused before it is asked again.
CAPACITY_TTL = 10.0


class RayExecutor:
    name = "ray"
    node_prefix = None

    def __init__(self, settings: TrainingSettings, program: Program = WORKER) -> None:
        self.settings, self.program = settings, program
        self._client: JobSubmissionClient | None = None
        # Records to delete: submission id -> when (monotonic); retried at every housekeeping.
        self._deletions: dict[str, float] = {}
        self._capacity: tuple[int, float] | None = None  # (workers at once, when measured)

    def _sid(self, job_id: str, attempt: int) -> str:
        return self.program.submission_id(job_id, attempt)

    @property
    def client(self) -> "JobSubmissionClient":
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.settings.ray_address)
            except Exception as exc:  # ConnectionError, or a dashboard that is not up yet
                raise ExecutorUnavailable(f"Ray at {self.settings.ray_address}: {exc}") from exc
        return self._client

    def entrypoint_options(self, job_id: str, attempt: int) -> dict[str, Any]:
        """What `submit_job` gets, besides the client (pure: unit-tested)."""
        s = self.settings
        command = s.ray_worker_command if self.program == WORKER else s.ray_tinker_command
        return {
            "entrypoint": f"{command} {shlex.quote(job_id)} {attempt}",
            "submission_id": self._sid(job_id, attempt),
            "entrypoint_num_gpus": s.ray_gpus_per_job,
            "entrypoint_resources": s.ray_entrypoint_resources(),
            "entrypoint_label_selector": s.ray_entrypoint_label_selector(),
            # Job policy only; storage and DB settings come from the node's environment.
            "runtime_env": {"env_vars": {
                "RAY_JOB_STOP_WAIT_TIME_S": str(int(s.ray_stop_wait_seconds)),
                "TUNESERVE_CHECKPOINT_EVERY_SECONDS": str(s.checkpoint_every_seconds),
            }},
            "metadata": {f"tuneserve_{self.program.kind}": job_id, "attempt": str(attempt)},
        }

    def start(self, job_id: str, attempt: int) -> str:
        options = {k: v for k, v in self.entrypoint_options(job_id, attempt).items()
                   if v is not None}
        try:
            return "ray:" + self.client.submit_job(**options)
        except ExecutorUnavailable:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise ExecutorUnavailable(str(exc)) from exc
            raise

    def _info(self, job_id: str, attempt: int) -> Any:
        try:
            return self.client.get_job_info(self._sid(job_id, attempt))
        except ExecutorUnavailable:
            return None
        except Exception as exc:
            if not _unreachable(exc) and "does not exist" not in str(exc):
                log.warning("Ray job %s: %s", self._sid(job_id, attempt), exc)
            return None

    def housekeep(self) -> None:
        self._delete_due()

    def close(self) -> None:
        pass  # the cluster's jobs are Ray's; nothing here to release

    def state(self, job_id: str, attempt: int) -> WorkerInfo:
        info = self._info(job_id, attempt)
        if info is None:
            # Unknown to Ray, or Ray unreachable: the scheduler judges by the heartbeat.
            return WorkerInfo(WorkerState.UNKNOWN)
        status = str(info.status.value if hasattr(info.status, "value") else info.status)
        if status == "PENDING":
            return WorkerInfo(WorkerState.PENDING)
        if status == "RUNNING":
            return WorkerInfo(WorkerState.RUNNING)
        if status != "SUCCEEDED":
            log.warning("Ray job %s ended %s: %s", self._sid(job_id, attempt), status,
                        info.message)
        code = getattr(info, "driver_exit_code", None)
        return WorkerInfo(WorkerState.EXITED, 0 if status == "SUCCEEDED" else code)

    def _slots_per_node(self) -> list[int] | None:
        """How many workers each alive node that matches the label selector could hold at
        once, by its total resources; None when Ray cannot be asked."""
        from ray.util.state import list_nodes

        s = self.settings
        wanted = self._wanted()
        labels = s.ray_entrypoint_label_selector() or {}
        try:
            nodes = list_nodes(address=s.ray_address, detail=True, raise_on_missing_output=False)
        except Exception:
            return None
        slots = []
        for node in nodes:
            total = getattr(node, "resources_total", None) or {}
            node_labels = getattr(node, "labels", None) or {}
            if (getattr(node, "state", "ALIVE") == "ALIVE"
                    and all(node_labels.get(k) == v for k, v in labels.items())):
                slots.append(min(int(total.get(k, 0) // v) for k, v in wanted.items()))
        return slots

    def _wanted(self) -> dict[str, float]:
        s = self.settings
        wanted: dict[str, float] = {**(s.ray_entrypoint_resources() or {})}
        if s.ray_gpus_per_job:
            wanted["GPU"] = s.ray_gpus_per_job
        return wanted

    def placeable(self, job_id: str, attempt: int) -> bool:
        slots = self._slots_per_node()
        # Cannot tell: keep waiting rather than fail a job.
        return slots is None or any(n > 0 for n in slots)

    def capacity(self) -> int | None:
        """Ray queues what it cannot place, but fails a job whose supervisor has waited
        RAY_JOB_START_TIMEOUT_SECONDS (15 min) for room: so jobs wait in our `queued` until
        the cluster has room. Cached for CAPACITY_TTL seconds (one dashboard call per tick
        is enough load). None (no bound) for jobs that ask for nothing countable."""
        if not self._wanted():
            return None
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[1] > CAPACITY_TTL:
            slots = self._slots_per_node()
            if slots is None:
                return self._capacity[0] if self._capacity else None
            self._capacity = (sum(slots), now)
        return self._capacity[0]

    def stop(self, job_id: str, attempt: int, force: bool = False) -> None:
        # Ray sends SIGTERM, waits RAY_JOB_STOP_WAIT_TIME_S, then SIGKILLs: `force` needs
        # nothing more.
        try:
            self.client.stop_job(self._sid(job_id, attempt))
        except Exception as exc:
            log.warning("could not stop Ray job %s: %s", self._sid(job_id, attempt), exc)

    def forget(self, job_id: str, attempt: int) -> bool:
        # Our DB holds the outcome now; Ray would keep the record forever otherwise.
        self._deletions.setdefault(self._sid(job_id, attempt),
                                   time.monotonic() + DELETE_GRACE_SECONDS)
        self._delete_due()
        return True

    def _delete_due(self) -> None:
        now = time.monotonic()
        for sid, due in list(self._deletions.items()):
            if due > now:
                continue
            try:
                self.client.delete_job(sid)
            except Exception as exc:
                if "does not exist" not in str(exc):
                    log.info("Ray job %s not deleted yet (%s); trying again", sid,
                             str(exc).splitlines()[0])
                    self._deletions[sid] = now + DELETE_GRACE_SECONDS
                    continue
            del self._deletions[sid]

    def log_tail(self, job_id: str, attempt: int, max_chars: int = 2000) -> str:
        try:
            return str(self.client.get_job_logs(self._sid(job_id, attempt)))[-max_chars:]
        except Exception:
            return ""


# What Ray's dashboard answers while its job agents are (re)starting, or busy: seen when a
# second cluster started on the same machine. The submission did not happen; retry later.
_TRANSIENT = ("No available agent to submit job", "please try again later")


def _unreachable(exc: Exception) -> bool:
    import requests

    return (isinstance(exc, requests.exceptions.ConnectionError | ConnectionError)
            or any(text in str(exc) for text in _TRANSIENT))
