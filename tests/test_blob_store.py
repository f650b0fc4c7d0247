"""The blob store contract, on the local directory store and on a real S3 server."""

import os

import pytest

from storage.blob import BlobNotFound, BlobStore, S3BlobStore
from storage.blob.s3 import PART_SIZE


def test_put_get_and_ranged_reads(blob_store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert blob_store.put("files/p/a", data) == len(data)
    assert blob_store.size("files/p/a") == len(data)
    assert blob_store.get("files/p/a") == data
    assert b"".join(blob_store.read("files/p/a", 5, 1_500_000)) == data[5:1_500_000]
    assert b"".join(blob_store.read("files/p/a", len(data) - 3)) == data[-3:]


def test_streamed_write_larger_than_a_part_round_trips(blob_store: BlobStore) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    with blob_store.writer("big/blob") as writer:
        for i in range(0, len(data), 700_001):
            writer.write(data[i : i + 700_001])
        assert writer.commit() == len(data)
    assert blob_store.get("big/blob") == data


def test_uncommitted_write_is_invisible_and_abort_leaves_nothing(blob_store: BlobStore) -> None:
    writer = blob_store.writer("files/p/partial")
    writer.write(os.urandom(PART_SIZE + 1))  # far enough to have started a multipart upload
    # A crashed process never commits: nothing may be visible at the key meanwhile.
    assert not blob_store.exists("files/p/partial")
    assert blob_store.list_keys("files/") == []
    writer.abort()
    assert blob_store.list_keys("") == []
    if isinstance(blob_store, S3BlobStore):
        uploads = blob_store.client.list_multipart_uploads(Bucket=blob_store.bucket)
        mine = [u for u in uploads.get("Uploads", []) if u["Key"].startswith(blob_store.prefix)]
        assert mine == []


def test_exception_inside_writer_block_aborts(blob_store: BlobStore) -> None:
    with pytest.raises(RuntimeError), blob_store.writer("files/p/x") as writer:
        writer.write(b"half")
        raise RuntimeError("client went away")
    assert not blob_store.exists("files/p/x")


def test_missing_blob(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        blob_store.read("nope/nothing")
    with pytest.raises(BlobNotFound):
        blob_store.size("nope/nothing")
    blob_store.delete("nope/nothing")  # deleting what is gone is fine


def test_list_delete_and_delete_prefix(blob_store: BlobStore) -> None:
    for key in ["a/1", "a/2", "a/sub/3", "ab/4", "b/5"]:
        blob_store.put(key, key.encode())
    assert blob_store.list_keys("a/") == ["a/1", "a/2", "a/sub/3"]
    assert blob_store.list_keys("a") == ["a/1", "a/2", "a/sub/3", "ab/4"]
    blob_store.delete("a/1")
    assert not blob_store.exists("a/1")
    blob_store.delete_prefix("a/")
    assert blob_store.list_keys("") == ["ab/4", "b/5"]


@pytest.mark.parametrize("sizes", [[10, 20, 5], [6 << 20, 6 << 20, 100]])
def test_compose_concatenates_in_the_given_order(blob_store: BlobStore, sizes: list[int]) -> None:
    parts = [os.urandom(n) for n in sizes]
    for i, part in enumerate(parts):
        blob_store.put(f"parts/{i}", part)
    order = [2, 0, 1] if sizes[2] >= 5 << 20 else [1, 0, 2]
    size = blob_store.compose("whole", [f"parts/{i}" for i in order])
    assert size == sum(sizes)
    assert blob_store.get("whole") == b"".join(parts[i] for i in order)
    assert blob_store.exists("parts/0")


def test_keys_cannot_escape_the_local_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from storage.blob import LocalBlobStore

    store = LocalBlobStore(tmp_path / "root")
    for bad in ["../x", "a/../../x", "", "a//b"]:
        with pytest.raises(ValueError):
            store.put(bad, b"x")
