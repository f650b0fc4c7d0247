"""Tells an outage of the blob store or the DB, or a full disk, from a bug: what a caller may
answer with 503 and `retry-after` (the client retries, nothing was lost), or 507, instead of
a 500."""

import errno
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

Part = Literal["storage", "database"]
# The families those errors come in (and some that are bugs: `unavailable_part` tells).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError, SQLAlchemyError)


def unavailable_part(exc: BaseException | None) -> Part | None:
    """`storage` or `database` when `exc`, or what it was raised from, says that part could
    not be reached (connection refused or dropped, a timeout, a 5xx after the retries)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return "storage"
        if isinstance(exc, ClientError) and int(
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500:
            return "storage"
        if isinstance(exc, OperationalError | PoolTimeout) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return "database"
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or what it was raised from, is a write to a full disk or quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
