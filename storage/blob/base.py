"""The blob store contract: streamed, atomic writes; streamed, ranged reads."""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

READ_CHUNK = 1 << 20


class BlobNotFound(KeyError):
    """No blob at that key."""


class BlobWriter(ABC):
    """Receives a blob's bytes in order. Nothing is visible at the key until `commit()`;
    leaving the `with` block without committing aborts and leaves no trace."""

    def __init__(self) -> None:
        self.size = 0
        self._done = False

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)
            self.size += len(data)

    def commit(self) -> int:
        self._commit()
        self._done = True
        return self.size

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class BlobStore(ABC):
    """Keys are `/`-separated paths built from our own ids (`files/{project}/{file_id}`)."""

    @abstractmethod
    def writer(self, key: str) -> BlobWriter: ...

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes `[start, end)` of the blob, in chunks. Raises `BlobNotFound` before yielding."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes the blob; a missing key is not an error."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[tuple[str, float]]:
        """(key, last modified as a Unix time) of every blob under `prefix`, by key."""

    def list_keys(self, prefix: str) -> list[str]:
        return [key for key, _ in self.list_objects(prefix)]

    def remove_stale_partials(self, older_than: float) -> int:
        """Drops what writers that died mid-write left behind, older than this Unix time;
        how many. (S3 itself never shows an unfinished object.)"""
        return 0

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list_keys(prefix):
            self.delete(key)

    def put(self, key: str, chunks: Iterable[bytes] | bytes) -> int:
        with self.writer(key) as w:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                w.write(chunk)
            return w.commit()

    def get(self, key: str) -> bytes:
        return b"".join(self.read(key))

    def upload_dir(self, local_dir: Path, prefix: str, names: Iterable[str] | None = None) -> None:
        """Copies the files of `local_dir` (or just `names`) under `prefix`."""
        for path in sorted(local_dir.rglob("*")):
            rel = path.relative_to(local_dir).as_posix()
            if path.is_file() and (names is None or rel in names):
                with open(path, "rb") as f:
                    self.put(prefix + rel, iter(partial(f.read, READ_CHUNK), b""))

    def download_prefix(self, prefix: str, local_dir: Path) -> list[Path]:
        """Copies every blob under `prefix` into `local_dir`, keeping relative paths."""
        paths = []
        for key in self.list_keys(prefix):
            path = local_dir / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for chunk in self.read(key):
                    f.write(chunk)
            paths.append(path)
        return paths

    def compose(self, key: str, sources: list[str]) -> int:
        """Writes the concatenation of `sources` at `key`; the sources stay in place."""
        with self.writer(key) as w:
            for source in sources:
                for chunk in self.read(source):
                    w.write(chunk)
            return w.commit()
