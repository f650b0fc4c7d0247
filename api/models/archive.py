"""A fine-tuned model's PEFT adapter folder as a tar archive, streamed from the blob store
as it is read: no temp file, no whole blob in memory, so an adapter of any size costs the
API node one chunk at a time. Sizes are known up front, so the response has a length."""

import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from storage.blob import BlobStore

_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Member:
    key: str
    size: int
    header: bytes

    @property
    def padding(self) -> int:
        return -self.size % _BLOCK


def adapter_members(store: BlobStore, prefix: str, folder: str) -> list[Member]:
    """The archive's entries, one per file of the adapter, read before the first byte is
    sent: a missing or unreachable adapter is still a clean error."""
    now = int(time.time())
    members = []
    for key in store.list_keys(prefix):
        info = tarfile.TarInfo(f"{folder}/{key[len(prefix):]}")
        info.size, info.mtime, info.mode = store.size(key), now, 0o644
        members.append(Member(key, info.size, info.tobuf(format=tarfile.PAX_FORMAT)))
    return members


def archive_size(members: list[Member]) -> int:
    return sum(len(m.header) + m.size + m.padding for m in members) + 2 * _BLOCK


def tar_stream(store: BlobStore, members: list[Member]) -> Iterator[bytes]:
    for member in members:
        yield member.header
        sent = 0
        for chunk in store.read(member.key):
            sent += len(chunk)
            yield chunk
        if sent != member.size:  # changed under us: a short archive must not look whole
            raise OSError(f"{member.key} changed while it was sent")
        yield b"\0" * member.padding
    yield b"\0" * (2 * _BLOCK)  # the end-of-archive marker
