"""A key is revoked while a request carrying it is being looked up: the NOTIFY that says so
lands between the lookup's check for revocations and its store into the cache. The key must
not stay cached on that node (it would be usable until LISTEN reconnects)."""

import asyncio
from typing import Any

from api.background.key_cache import KeyCache
from storage import api_keys
from storage.db import Database
from storage.ids import new_id
from storage.models import Project


class _NotifiedWhileStoring(dict[str, Any]):
    """The cache's map, with the listener thread's revocation landing at the worst moment:
    after the lookup checked for revocations, before the key is stored."""

    def __init__(self, cache: KeyCache) -> None:
        super().__init__()
        self.cache = cache

    def __setitem__(self, digest: str, project: Any) -> None:
        self.cache.revoked(digest)
        super().__setitem__(digest, project)


def test_a_revocation_racing_a_lookup_is_not_cached_over(database: Database) -> None:
    with database.session() as s:
        project_id = new_id("proj_")
        s.add(Project(id=project_id, name="p" + new_id(""), created_at=0))
        s.flush()
        secret = api_keys.add_api_key(s, project_id)
    cache = KeyCache(database)
    cache._listening.set()  # as on PostgreSQL while LISTEN holds
    cache._projects = _NotifiedWhileStoring(cache)

    # The lookup read the key before its revocation committed: this one request passes.
    first = asyncio.run(cache.project(secret))
    assert first is not None and first.id == project_id
    with database.session() as s:
        api_keys.revoke_hashed(s, api_keys.hash_key(secret))
    assert asyncio.run(cache.project(secret)) is None


def test_the_revocation_listener_stops_at_once(database: Database) -> None:
    # Every API process, and every in-process test app on PostgreSQL, waits for it on the way
    # out: it looks at stop() between notifications, not once a probe interval (2 s).
    import time

    cache = KeyCache(database)
    cache.start()
    if database.engine.dialect.name == "postgresql":
        assert cache._listening.wait(10)
    started = time.monotonic()
    cache.stop()
    assert time.monotonic() - started < 0.5
