"""Which project an API key belongs to, with revocation seen at once by every API process.

The cache maps sha256(key) to its project (never the key itself). On PostgreSQL it is used
only while this process LISTENs on the channel that `revoke_key` NOTIFYs in the revoking
transaction: a revoked key leaves every process's cache as the revocation commits, and a
process whose listening connection broke asks the database for every key until it listens
again. SQLite has no such channel, and a lookup there is a local read: no cache at all."""

import logging
import threading
import time

import psycopg
from fastapi.concurrency import run_in_threadpool

from storage.api_keys import KEYS_CHANNEL, hash_key, project_for_key
from storage.db import Database
from storage.models import Project

log = logging.getLogger("tuneserve.api")

_CACHE_SIZE = 10_000
_RECONNECT_SECONDS = 2.0
_PROBE_SECONDS = 2.0
# The listener looks at `stop()` this often between notifications: a stopping API process
# (and every in-process test app) waits this long for it, not a whole probe interval.
_WAKE_SECONDS = 0.2


class KeyCache:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._projects: dict[str, Project] = {}
        # Bumped at each revocation seen: a lookup that raced one is not cached.
        self._revocations = 0
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.db.engine.dialect.name != "postgresql":
            return
        self._thread = threading.Thread(target=self._listen, name="key-revocations",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def project(self, secret: str) -> Project | None:
        digest = hash_key(secret)
        if self._listening.is_set():
            cached = self._projects.get(digest)
            if cached is not None:
                return cached
        seen = self._revocations
        project = await run_in_threadpool(self._lookup, digest)
        # Stored only if still listening and no revocation came meanwhile (it may be this
        # key's, committed after the lookup read it).
        if project is not None and self._listening.is_set() and seen == self._revocations:
            if len(self._projects) >= _CACHE_SIZE:
                self._projects.clear()
            self._projects[digest] = project
            # The listener thread counts a revocation before it drops the key: one that came
            # between the check above and the store is seen here, and its key is not kept.
            if seen != self._revocations:
                self._projects.pop(digest, None)
        return project

    def revoked(self, digest: str) -> None:
        """A key was revoked (its NOTIFY, on the listener thread): counted first, so a lookup
        racing it does not keep it (see `project`), then dropped."""
        self._revocations += 1
        self._projects.pop(digest, None)

    def _lookup(self, digest: str) -> Project | None:
        with self.db.session() as s:
            project = project_for_key(s, digest)
            if project is not None:
                s.expunge(project)
            return project

    def _listen(self) -> None:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5,
                                     options="-c statement_timeout=5000", keepalives=1,
                                     keepalives_idle=10, keepalives_interval=5,
                                     keepalives_count=3) as conn:
                    conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    # Anything cached before now may have missed a revocation.
                    self._projects.clear()
                    self._listening.set()
                    probed = time.monotonic()
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=_WAKE_SECONDS):
                            self.revoked(note.payload)
                        if time.monotonic() - probed >= _PROBE_SECONDS:
                            # A connection that died without a word would never notify.
                            conn.execute("SELECT 1")
                            probed = time.monotonic()
            except psycopg.Error as exc:
                if not self._stopping.is_set():
                    log.warning("key revocations: listening failed (%s); every key is "
                                "looked up until it works again", type(exc).__name__)
            finally:
                self._listening.clear()
                self._projects.clear()
            self._stopping.wait(_RECONNECT_SECONDS)
