"""Alembic environment: the engine comes from `storage.db.alembic_config`."""

from alembic import context
from sqlalchemy import Connection

from storage.models import Base


class ForeignKeyViolations(RuntimeError):
    """An upgrade left rows whose parents are gone; it was rolled back."""


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def _foreign_keys(connection: Connection, on: bool) -> None:
    """Sets SQLite's foreign key enforcement, which it ignores inside a transaction: so this
    commits first, and reads the setting back rather than trust it took."""
    connection.commit()
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar() != int(on):
        raise RuntimeError(f"SQLite did not turn foreign keys {'on' if on else 'off'}")
    connection.commit()


def _run_on_sqlite(connection: Connection) -> None:
    """A batch migration rebuilds a table (copy it, DROP the old one, rename the copy), and
    with foreign keys enforced the DROP's implicit DELETE cascades to every row that
    references the table: a rebuilt `fine_tuning_jobs` took every job's events and
    checkpoints with it. So the migrations run with foreign keys off (Alembic's recipe for
    batch mode), in one transaction that also checks the keys after: a violation rolls the
    whole upgrade back. The pooled connection gets its enforcement back either way."""
    _foreign_keys(connection, on=False)
    try:
        # pysqlite would only open a transaction at the first INSERT, after the copy's
        # CREATE TABLE: BEGIN now so that all of it commits, or none. Alembic, seeing a
        # transaction already open, leaves committing it to us.
        connection.exec_driver_sql("BEGIN")
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if violations:
            raise ForeignKeyViolations(
                "the upgrade would leave rows whose parents are gone (table, rowid, parent): "
                + ", ".join(str(tuple(v[:3])) for v in violations[:10]))
        connection.commit()
    finally:
        connection.rollback()
        _foreign_keys(connection, on=True)


engine = context.config.attributes["engine"]
with engine.connect() as connection:
    if connection.dialect.name == "sqlite":
        _run_on_sqlite(connection)
    else:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
