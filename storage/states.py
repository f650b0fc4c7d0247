"""The shape every state machine here has: a `StrEnum` of states, one table of allowed
transitions, `check_transition` raising `IllegalTransition` on a move the table does not
allow, and one guarded writer (a conditional, fenced UPDATE) next to the table.

The machines: jobs (`training/jobs.py`), the engine-side evaluation
(`training/evaluation_state.py`), uploads (`storage/uploads.py`), webhook deliveries
(`storage/webhooks.py`) and adapters on a replica (`serving/adapter_registry.py`). The job's
states are defined here, the bottom layer, so the job table's status column is typed by
them; the stored strings are the enum's values."""

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

State = TypeVar("State")


class IllegalTransition(ValueError):
    """A code path asked for a move the table does not allow: a bug, not a race."""


def check_transition(table: Mapping[State, frozenset[State]], expect: Iterable[State],
                     target: State) -> None:
    """Raises `IllegalTransition` unless `target` may follow every state in `expect`."""
    bad = [s for s in expect if target not in table[s]]
    if bad:
        raise IllegalTransition(
            f"{', '.join(str(s) for s in bad)} -> {target} is not an allowed transition")


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    # Pause asked for; the worker is saving a checkpoint before it stops.
    PAUSING = "pausing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EnumString(TypeDecorator[StrEnum]):
    """A `String(length)` column that reads back as a `StrEnum`: the stored value is the
    enum's string, so typing an existing column this way needs no migration (and no CHECK
    constraint a migration would have to add)."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        # Raises ValueError on a string that is no state: nothing else reaches the column.
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)
