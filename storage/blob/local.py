"""Blob store in a local directory (the embedded default)."""

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from storage.blob.base import READ_CHUNK, BlobNotFound, BlobStore, BlobWriter
from storage.ids import random_token

_TMP_PREFIX = ".tmp-"


class LocalBlobWriter(BlobWriter):
    """Writes to a hidden temp file beside the target, renamed into place on commit."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.parent / f"{_TMP_PREFIX}{random_token(12)}-{path.name}"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def _write(self, data: bytes) -> None:
        self._file.write(data)

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self._path)

    def _abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def writer(self, key: str) -> BlobWriter:
        return LocalBlobWriter(self._path(key))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        return self._chunks(f, start, end)

    @staticmethod
    def _chunks(f: io.BufferedReader, start: int, end: int | None) -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                chunk = f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path.stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_objects(self, prefix: str) -> list[tuple[str, float]]:
        # The last component is a partial name (or empty for a "dir/" prefix).
        base = self.root.joinpath(*prefix.split("/")[:-1])
        if not base.is_dir():
            return []
        found = []
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        found.append((key, path.stat().st_mtime))
        return sorted(found)

    def remove_stale_partials(self, older_than: float) -> int:
        removed = 0
        for path in self.root.rglob(_TMP_PREFIX + "*") if self.root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
        return removed

    def delete_prefix(self, prefix: str) -> None:
        super().delete_prefix(prefix)
        if prefix.endswith("/"):
            shutil.rmtree(self.root / prefix.strip("/"), ignore_errors=True)
