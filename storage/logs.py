"""Log files under the data dir: rotated and aged out, so they never fill its disk."""

import time
from pathlib import Path


def rotate(path: Path, max_bytes: int, keep: int = 3) -> None:
    """Before a process opens `path` to append: past `max_bytes`, it becomes `path.1` (and
    `.1` becomes `.2`..., the oldest beyond `keep` dropped)."""
    if not path.is_file() or path.stat().st_size <= max_bytes:
        return
    for n in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if n == keep:
            older.unlink(missing_ok=True)
        else:
            newer_name = path.with_name(f"{path.name}.{n + 1}")
            if older.exists():
                older.rename(newer_name)
    path.rename(path.with_name(f"{path.name}.1"))


def remove_old(log_dir: Path, older_than_seconds: float, now: float | None = None) -> int:
    """Deletes the logs nothing has written to for this long (finished jobs' workers,
    rotated engine logs); returns how many."""
    cutoff = (now or time.time()) - older_than_seconds
    removed = 0
    for path in log_dir.glob("*.log*") if log_dir.is_dir() else ():
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
