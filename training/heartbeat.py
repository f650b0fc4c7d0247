"""The worker's line to the DB: proves it is alive, learns of cancel and pause requests, and
finds out when it no longer holds the job (another attempt took it over)."""

import contextlib
import logging
import signal
import threading
import time
from typing import Any

from storage.db import Database
from training import jobs
from training.jobs import JobStatus

log = logging.getLogger("tuneserve.worker")

INTERVAL = 1.0


class Heartbeat:
    def __init__(self, db: Database, job_id: str, attempt: int,
                 interval: float = INTERVAL) -> None:
        self.db = db
        self.job_id = job_id
        self.attempt = attempt
        self.interval = interval
        self.cancelled = False
        self.pause_requested = False
        # Another attempt holds the job now: stop, and touch nothing shared.
        self.lost = False
        # SIGTERM (a stop from the executor, a preempted node): save state, then stop.
        self.stop_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    @property
    def should_stop(self) -> bool:
        return self.cancelled or self.lost

    def start(self) -> "Heartbeat":
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: saving state, then stopping")
        self.stop_requested = True

    def beat(self) -> None:
        with self.db.session() as s:
            if jobs.transition(s, self.job_id, jobs.WORKING, self.attempt,
                               heartbeat_at=time.time()):
                job = jobs.get_job(s, self.job_id)
                self.pause_requested = job is not None and job.status == JobStatus.PAUSING
                return
            job = jobs.get_job(s, self.job_id)
        if job is None or job.status == JobStatus.CANCELLED:
            self.cancelled = True
        elif not (job.attempt == self.attempt
                  and job.status in (JobStatus.SUCCEEDED, JobStatus.PAUSED)):
            # (Its own last word, succeeded or paused, is not a loss.)
            if not self.lost:
                log.warning("attempt %s no longer holds the job (now attempt %s, %s); stopping",
                            self.attempt, job.attempt, job.status)
            self.lost = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # A DB hiccup must not kill training; the next beat retries.
            with contextlib.suppress(Exception):
                self.beat()
