"""Upgrades keep every row: a database at each earlier revision, with a row in every table it
has, is upgraded to head on SQLite and on PostgreSQL; every row is still there with the
values it had, and the app started on it serves the old jobs, their events and checkpoints,
files and models to the old key.

The rows come from reflecting the schema at that revision, so a table a future migration
adds is filled too; `PLAUSIBLE` gives the values the app reads a meaning (a finished job,
a processed file), and the rest are typed placeholders."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

import storage.db
from api.app import create_app
from api.settings import Settings
from storage.api_keys import hash_key
from storage.db import Database, alembic_config

KEY = "sk-from-an-older-tuneserve-0123456789"
BASE = "SmolLM2-135M-Instruct"
MODEL = f"ft:{BASE}:old-team:support-bot:Ab3dEf9h"
NOW = int(time.time())

# table.column: a value the app reads with a meaning, or None where a placeholder would
# make the row something else (a job's key, an expired file, a delivery still due).
PLAUSIBLE: dict[str, Any] = {
    "projects.id": "proj_old", "projects.name": "old-team",
    "api_keys.key_hash": hash_key(KEY), "api_keys.redacted": "sk-...6789",
    "api_keys.revoked_at": None, "api_keys.job_id": None,
    "files.id": "file-old", "files.filename": "train.jsonl", "files.purpose": "fine-tune",
    "files.status": "processed", "files.status_details": None, "files.expires_at": None,
    "uploads.status": "completed", "uploads.expires_at": NOW + 3600,
    "uploads.file_id": "file-old", "uploads.purpose": "fine-tune",
    "fine_tuning_jobs.id": "ftjob-old", "fine_tuning_jobs.model": BASE,
    "fine_tuning_jobs.base_model": BASE, "fine_tuning_jobs.training_file": "file-old",
    "fine_tuning_jobs.validation_file": None, "fine_tuning_jobs.suffix": "support-bot",
    "fine_tuning_jobs.method": {"type": "supervised",
                                "supervised": {"hyperparameters": {"n_epochs": 1}}},
    "fine_tuning_jobs.metadata": {"team": "support"}, "fine_tuning_jobs.integrations": None,
    "fine_tuning_jobs.status": "succeeded", "fine_tuning_jobs.error": None,
    "fine_tuning_jobs.model_name": MODEL, "fine_tuning_jobs.fine_tuned_model": MODEL,
    "fine_tuning_jobs.result_files": [], "fine_tuning_jobs.control": None,
    "fine_tuning_jobs.worker": None, "fine_tuning_jobs.evaluation": None,
    "fine_tuning_jobs.not_before": None, "fine_tuning_jobs.resume_state": None,
    "fine_tuned_models.id": MODEL, "fine_tuned_models.job_id": "ftjob-old",
    "fine_tuned_models.base_model": BASE, "fine_tuned_models.checkpoint_id": None,
    "fine_tuning_job_events.id": "ftevent-old", "fine_tuning_job_events.level": "info",
    "fine_tuning_job_events.type": "message",
    "fine_tuning_job_events.message": "Fine-tuning job succeeded",
    "fine_tuning_job_checkpoints.id": "ftckpt-old",
    "fine_tuning_job_checkpoints.metrics": {"train_loss": 0.5},
    "fine_tuning_job_checkpoints.fine_tuned_model_checkpoint": MODEL + ":ckpt-step-3",
    "webhook_endpoints.url": "https://hooks.example.com/tuneserve",
    "webhook_endpoints.event_types": ["fine_tuning.job.succeeded"],
    "webhook_endpoints.previous_secret": None,
    "webhook_deliveries.status": "delivered", "webhook_delivery_attempts.status_code": 200,
    "webhook_delivery_attempts.error": None, "cursor_tombstones.deleted_at": float(NOW),
}


def _earlier_revisions() -> list[str]:
    config = Config()
    config.set_main_option("script_location", str(Path(storage.db.__file__).parent / "migrations"))
    oldest_first = [s.revision for s in reversed(list(
        ScriptDirectory.from_config(config).walk_revisions()))]
    return oldest_first[:-1]


def _placeholder(table: sa.Table, column: sa.Column[Any]) -> Any:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return {"kept": f"{table.name}.{column.name}"}
    if isinstance(kind, sa.String):
        return f"{table.name}.{column.name}"[:kind.length]
    if isinstance(kind, sa.Float):
        return 1.5
    if isinstance(kind, sa.Integer):
        return 7
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.LargeBinary):
        return f"{table.name}.{column.name}".encode()
    raise AssertionError(f"no placeholder for {table.name}.{column.name} ({kind!r})")


def _row(table: sa.Table, written: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A row for `table` whose foreign keys point at the rows `written` before it."""
    row = {}
    for column in table.columns:
        generated = (column.primary_key and len(table.primary_key.columns) == 1
                     and isinstance(column.type, sa.Integer))
        if generated:
            continue
        if column.foreign_keys:
            target = next(iter(column.foreign_keys)).column
            row[column.name] = written[target.table.name][target.name]
        else:
            row[column.name] = PLAUSIBLE.get(f"{table.name}.{column.name}",
                                             _placeholder(table, column))
    return row


def _tables(engine: sa.Engine) -> list[sa.Table]:
    schema = sa.MetaData()
    schema.reflect(engine)
    return [t for t in schema.sorted_tables if t.name != "alembic_version"]


def _contents(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as c:
        return {t.name: [dict(r._mapping) for r in c.execute(
            sa.select(t).order_by(*t.primary_key.columns))] for t in _tables(engine)}


def _fill(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """A row in every table; returns every table's rows as the database has them."""
    written: dict[str, dict[str, Any]] = {}
    with engine.begin() as c:
        for table in _tables(engine):
            written[table.name] = _row(table, written)
            c.execute(table.insert().values(written[table.name]))
    return _contents(engine)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield (f"sqlite:///{tmp_path / 'tuneserve.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))


def _upgraded(url: str, revision: str) -> tuple[dict[str, list[dict[str, Any]]],
                                                  dict[str, list[dict[str, Any]]]]:
    """The rows of a database filled at `revision`, before and after the upgrade to head."""
    db = Database(url)
    try:
        command.upgrade(alembic_config(db.engine), revision)
        before = _fill(db.engine)
        db.migrate()
        return before, _contents(db.engine)
    finally:
        db.dispose()


@pytest.mark.parametrize("revision", _earlier_revisions())
def test_an_upgrade_keeps_every_row(url: str, revision: str) -> None:
    before, after = _upgraded(url, revision)
    assert all(before.values()), "every table got a row"
    for table, rows in before.items():
        assert table in after, f"{table} is gone"
        assert len(after[table]) == len(rows), f"{table} lost rows"
        for old, new in zip(rows, after[table], strict=True):
            kept = old.keys() & new.keys()
            assert {c: new[c] for c in kept} == {c: old[c] for c in kept}, table


# The oldest databases (the most columns added since): from before jobs, and the first
# with jobs. The app on any later one reads the same head schema.
@pytest.mark.parametrize("revision", _earlier_revisions()[:2])
def test_the_app_serves_what_an_older_release_stored(
        url: str, revision: str, tmp_path: Path) -> None:
    before, _ = _upgraded(url, revision)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, serving_enabled=False)
    with TestClient(create_app(settings),
                    headers={"Authorization": f"Bearer {KEY}"}) as client:
        files = client.get("/v1/files")
        assert files.status_code == 200, files.text
        assert [f["id"] for f in files.json()["data"]] == ["file-old"]
        if "fine_tuning_jobs" not in before:
            return
        jobs = client.get("/v1/fine_tuning/jobs")
        assert jobs.status_code == 200, jobs.text
        [job] = jobs.json()["data"]
        assert (job["id"], job["status"], job["fine_tuned_model"]) == (
            "ftjob-old", "succeeded", MODEL)
        events = client.get("/v1/fine_tuning/jobs/ftjob-old/events").json()["data"]
        assert [e["message"] for e in events] == ["Fine-tuning job succeeded"]
        checkpoints = client.get("/v1/fine_tuning/jobs/ftjob-old/checkpoints").json()["data"]
        assert [c["fine_tuned_model_checkpoint"] for c in checkpoints] == [
            MODEL + ":ckpt-step-3"]
        assert MODEL in {m["id"] for m in client.get("/v1/models").json()["data"]}
