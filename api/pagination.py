"""OpenAI cursor pagination: `after` is the id of the last item of the previous page."""

from typing import Any, Literal, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from api.errors import APIError
from storage.tombstones import deleted_position

Row = TypeVar("Row", bound=Any)


def page(
    session: Session,
    query: Select[Row],
    model: type[Row],
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"] = "desc",
    scope: str | None = None,
) -> tuple[list[Row], bool]:
    """Rows of `query` after the cursor, newest first by default, and whether more follow.
    `scope`: the list's owner (project, job or model), for cursors of rows deleted since
    (`storage/tombstones.py`); None where the list's rows are never deleted."""
    if after is not None:
        # Looked up through the same query, so another project's id is no cursor here.
        cursor = session.scalar(query.with_only_columns(model.seq).where(model.id == after))
        if cursor is None and scope is not None:  # deleted since: where it stood
            cursor = deleted_position(session, model.__tablename__, scope, after)
        if cursor is None:
            raise APIError(400, f"No such object for the 'after' cursor: '{after}'",
                           param="after", code="invalid_cursor")
        query = query.where(model.seq < cursor if order == "desc" else model.seq > cursor)
    query = query.order_by(model.seq.desc() if order == "desc" else model.seq.asc())
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
