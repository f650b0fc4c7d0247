"""The worker's line to the DB: proves it is alive, and learns of cancel and pause requests."""

import contextlib
import threading
import time

from sqlalchemy import select

from storage.db import Database
from storage.models import FineTuningJob

INTERVAL = 1.0


class Heartbeat:
    def __init__(self, db: Database, job_id: str, interval: float = INTERVAL) -> None:
        self.db = db
        self.job_id = job_id
        self.interval = interval
        self.cancelled = False
        self.pause_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        with self.db.session() as s:
            job = s.scalar(select(FineTuningJob).where(FineTuningJob.id == self.job_id))
            if job is None or job.status == "cancelled":
                self.cancelled = True
                return
            self.pause_requested = job.control == "pause"
            if job.status == "running":
                job.heartbeat_at = time.time()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # A DB hiccup must not kill training; the next beat retries.
            with contextlib.suppress(Exception):
                self.beat()
