"""The disk under the blob store fills up while an upload arrives: a clear 507, no partial
file visible or left on the disk, and the server goes on storing what fits."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.server import TuneserveServer

pytestmark = pytest.mark.server

MiB = 1 << 20


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[TuneserveServer, Path]]:
    """A server whose blobs live on a 2 MiB filesystem of their own."""
    data = tmp_path_factory.mktemp("disk-full")
    blobs = data / "blobs"
    blobs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(blobs)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode()}")
    server = TuneserveServer(data).start()
    try:
        yield server, blobs
    finally:
        server.stop()
        subprocess.run(["umount", str(blobs)], check=False)


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_file(
        small_disk: tuple[TuneserveServer, Path]) -> None:
    server, blobs = small_disk
    client = server.client()
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("big.bin", os.urandom(3 * MiB)), purpose="batch")
    assert info.value.status_code == 507
    assert info.value.response.headers["x-should-retry"] == "false"  # not sent twice more
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "storage_full"
    assert list(client.files.list()) == []
    assert not [p for p in blobs.rglob("*") if p.is_file()]  # the partial write is gone
    small = os.urandom(MiB // 2)
    kept = client.files.create(file=("small.bin", small), purpose="batch")
    assert client.files.content(kept.id).read() == small
