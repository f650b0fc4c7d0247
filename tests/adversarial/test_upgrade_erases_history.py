"""An upgrade of a SQLite database must not erase job history: the batch migrations that
rebuild `fine_tuning_jobs` (0003, 0004) once ran with foreign keys enforced, and the DROP of
the old table cascaded to every job's events and checkpoints."""

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from storage.db import Database, alembic_config

PROJECT = ("proj-old", "default", 1)
JOB = {"id": "ftjob-old", "project_id": "proj-old", "model": "SmolLM2-135M-Instruct",
       "training_file": "file-old", "seed": 7, "method": '{"type": "supervised"}',
       "status": "succeeded", "model_name": "ft:SmolLM2-135M-Instruct:default::old",
       "created_at": 1, "result_files": "[]", "step": 3}


def _at(tmp_path: Path, revision: str) -> Database:
    """A SQLite database migrated to `revision`, with a project and a finished job."""
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    command.upgrade(alembic_config(db.engine), revision)
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO projects (id, name, created_at) VALUES (:i, :n, :t)"),
                  dict(zip("int", PROJECT, strict=True)))
        c.execute(text(f"INSERT INTO fine_tuning_jobs ({', '.join(JOB)}) "
                       f"VALUES ({', '.join(':' + k for k in JOB)})"), JOB)
    return db


def _add_event(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text("INSERT INTO fine_tuning_job_events (id, job_id, created_at, level, "
                       "message, type) VALUES ('ftevent-old', 'ftjob-old', 2, 'info', "
                       "'Fine-tuning job started', 'message')"))


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as c:
        return c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_job_event_survives_the_upgrade_to_head(tmp_path: Path) -> None:
    db = _at(tmp_path, "0002")
    _add_event(db.engine)
    db.migrate()
    assert _count(db.engine, "fine_tuning_jobs") == 1
    assert _count(db.engine, "fine_tuning_job_events") == 1


def test_events_and_checkpoints_survive_a_rebuild_of_the_jobs_table(tmp_path: Path) -> None:
    db = _at(tmp_path, "0003")
    _add_event(db.engine)
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO fine_tuning_job_checkpoints (id, job_id, created_at, "
                       "step_number, metrics, fine_tuned_model_checkpoint) VALUES "
                       "('ftckpt-old', 'ftjob-old', 3, 3, '{}', 'ft:x:ckpt-step-3')"))
    command.upgrade(alembic_config(db.engine), "0004")
    assert _count(db.engine, "fine_tuning_job_events") == 1
    assert _count(db.engine, "fine_tuning_job_checkpoints") == 1


def test_connections_enforce_foreign_keys_again_after_the_upgrade(tmp_path: Path) -> None:
    db = _at(tmp_path, "0002")
    db.migrate()
    with db.engine.connect() as c:  # the pool's connection the upgrade used
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_an_upgrade_leaving_orphans_fails_and_changes_nothing(tmp_path: Path) -> None:
    db = _at(tmp_path, "0003")
    with db.engine.connect() as c:  # an orphan written while foreign keys were off
        c.exec_driver_sql("PRAGMA foreign_keys=OFF")
        c.exec_driver_sql("INSERT INTO fine_tuning_job_events (id, job_id, created_at, level, "
                          "message, type) VALUES ('ftevent-x', 'ftjob-gone', 2, 'info', 'x', "
                          "'message')")
        c.commit()
        c.exec_driver_sql("PRAGMA foreign_keys=ON")
    with pytest.raises(Exception, match="parents are gone"):
        db.migrate()
    with db.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0003"
        columns = {r[1] for r in c.exec_driver_sql("PRAGMA table_info(fine_tuning_jobs)")}
        assert "base_model" not in columns  # 0004 rolled back, its table copy too
        assert not c.exec_driver_sql("SELECT name FROM sqlite_master "
                                     "WHERE name LIKE '_alembic_tmp%'").all()
