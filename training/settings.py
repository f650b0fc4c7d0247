"""Settings of the job system (the scheduler in the API process and the workers)."""

from storage.settings import StorageSettings


class TrainingSettings(StorageSettings):
    # Jobs training at once on this node; the rest wait in `queued`, first in first out.
    max_concurrent_jobs: int = 1
    # A running job whose worker has not reported for this long is taken as lost.
    worker_heartbeat_timeout: float = 60.0
    scheduler_interval: float = 1.0
    # How long a cancelled worker gets to stop by itself before it is killed.
    cancel_grace_seconds: float = 5.0
