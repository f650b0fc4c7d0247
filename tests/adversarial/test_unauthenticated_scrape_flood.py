"""Anyone who reaches the node may ask `/metrics` and `/ready` (a scraper and a load balancer
have no key): asked in a flood, they must not turn into a flood of full-table aggregates over
every tenant's jobs, DB round trips and blob-store HEADs."""

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from api.metrics import _JobsCollector
from api.readiness import ReadinessChecks
from storage.blob import LocalBlobStore
from storage.db import Database


class _CountingDatabase(Database):
    """Counts the sessions opened (`session()` opens one of `sessions` too)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened = 0
        make = self.sessions

        def counted() -> Session:
            self.opened += 1
            return make()

        self.sessions = counted  # type: ignore[assignment]


class _CountingStore(LocalBlobStore):
    asked = 0

    def exists(self, key: str) -> bool:
        self.asked += 1
        return super().exists(key)


def _services(tmp_path: Path) -> Any:
    """The parts of the node's services these two read, counting their use."""
    db = _CountingDatabase(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate()
    return SimpleNamespace(db=db, store=_CountingStore(tmp_path / "b"), serving=None)


def test_a_metrics_flood_reads_the_jobs_table_once(tmp_path: Path) -> None:
    services = _services(tmp_path)
    collector = _JobsCollector(lambda: services.db)
    for _ in range(200):
        assert any(m.name == "tuneserve_fine_tuning_jobs" for m in collector.collect())
    assert services.db.opened == 1


def test_a_readiness_flood_asks_the_database_and_store_once(tmp_path: Path) -> None:
    services = _services(tmp_path)
    checks = ReadinessChecks()

    async def flood() -> list[dict[str, str]]:
        return await asyncio.gather(*(checks.run(services) for _ in range(200)))

    answers = asyncio.run(flood())
    assert all(a == {"database": "ok", "storage": "ok", "engine": "off"} for a in answers)
    assert (services.db.opened, services.store.asked) == (1, 1)
