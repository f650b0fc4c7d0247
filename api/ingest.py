"""Streams an uploaded file part into the blob store, checking size and JSONL on the way."""

from fastapi.concurrency import run_in_threadpool

from api.errors import APIError
from api.multipart import FilePart
from storage.blob import BlobStore
from training.validation import DatasetError, parse_line

# Writes go to the store in blocks this big: few thread hops, bounded memory.
BLOCK = 1 << 20
MAX_LINE = 32 << 20


def file_too_large(limit: int, param: str | None) -> APIError:
    return APIError(413, f"File is too large: the limit is {limit} bytes. Use the Uploads API "
                    "for larger files.", param=param, code="file_too_large")


class JsonlChecker:
    """Checks every line as the bytes stream by, with the line reader validation uses (the
    same rules for a BOM, NaN, blank lines and non-objects); remembers the first bad line
    instead of raising, since the caller may learn later that it doesn't care."""

    def __init__(self) -> None:
        self.line = 0
        self.error: str | None = None
        self._rest = bytearray()

    def feed(self, data: bytes) -> None:
        if self.error:
            return
        lines = data.split(b"\n")
        if len(lines) == 1:
            self._rest.extend(data)
            if len(self._rest) > MAX_LINE:
                self.error = f"Line {self.line + 1} is longer than {MAX_LINE >> 20} MiB."
            return
        self._rest.extend(lines[0])
        self._check(bytes(self._rest))
        for line in lines[1:-1]:
            self._check(line)
        self._rest = bytearray(lines[-1])

    def finish(self) -> None:
        if not self.error and self._rest:
            self._check(bytes(self._rest))
        self._rest = bytearray()

    def _check(self, line: bytes) -> None:
        self.line += 1
        if self.error:
            return
        try:
            parse_line(line, self.line, "file")
        except DatasetError as err:
            self.error = err.message + "."


class BlobSink:
    """A `FileSink` that writes one file part to `key`; nothing is visible there until
    `commit()`. Over `max_bytes` it stops with a 413."""

    def __init__(self, store: BlobStore, key: str, max_bytes: int, check_jsonl: bool) -> None:
        self.store = store
        self.key = key
        self.max_bytes = max_bytes
        self.part: FilePart | None = None
        self.size = 0
        self.jsonl: JsonlChecker | None = JsonlChecker() if check_jsonl else None
        self._writer = store.writer(key)
        self._block: list[bytes] = []
        self._blocked = 0

    async def start(self, part: FilePart, fields: dict[str, str]) -> None:
        if self.part is not None:
            raise APIError(400, f"Only one '{part.name}' may be sent.", param=part.name)
        self.part = part
        # The purpose usually arrives before the file; when it did, only fine-tune is checked.
        if fields.get("purpose") not in (None, "fine-tune"):
            self.jsonl = None

    async def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise file_too_large(self.max_bytes, self.part.name if self.part else None)
        self._block.append(data)
        self._blocked += len(data)
        if self._blocked >= BLOCK:
            await self._flush()

    async def end(self) -> None:
        await self._flush()
        if self.jsonl:
            self.jsonl.finish()

    async def _flush(self) -> None:
        if self._block:
            block = b"".join(self._block)
            self._block, self._blocked = [], 0
            await run_in_threadpool(self._consume, block)

    def _consume(self, block: bytes) -> None:
        if self.jsonl:
            self.jsonl.feed(block)
        self._writer.write(block)

    async def commit(self) -> None:
        await run_in_threadpool(self._writer.commit)

    async def abort(self) -> None:
        await run_in_threadpool(self._writer.abort)
