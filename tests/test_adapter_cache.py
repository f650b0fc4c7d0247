"""The local adapter cache: fetched once, least recently used evicted past its size."""

from pathlib import Path

import pytest

from serving.adapter_cache import AdapterCache
from serving.adapter_errors import ModelNotFound
from storage.blob import BlobStore


def _adapter(store: BlobStore, prefix: str, size: int) -> None:
    store.put(prefix + "adapter_config.json", b"{}")
    store.put(prefix + "adapter_model.safetensors", b"\0" * size)


def test_fetches_once_and_evicts_the_least_recently_used(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    for name in "abc":
        _adapter(blob_store, f"adapters/p/{name}/", 1000)
    cache = AdapterCache(tmp_path / "cache", max_bytes=2500, store=blob_store)
    a = cache.path("a", "adapters/p/a/")
    assert (a / "adapter_model.safetensors").stat().st_size == 1000
    blob_store.delete("adapters/p/a/adapter_model.safetensors")
    assert cache.path("a", "adapters/p/a/") == a  # served from disk, not fetched again
    cache.path("b", "adapters/p/b/")
    cache.path("a", "adapters/p/a/")  # a is now more recent than b
    cache.path("c", "adapters/p/c/")  # over 2500 bytes: b goes
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a", "c"]

    # A restart finds what is on disk.
    again = AdapterCache(tmp_path / "cache", max_bytes=2500, store=blob_store)
    assert again.path("a", "adapters/p/a/") == a
    again.drop("a")
    assert not a.exists()


def test_missing_adapter_is_not_found(blob_store: BlobStore, tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path / "cache", max_bytes=10_000, store=blob_store)
    with pytest.raises(ModelNotFound):
        cache.path("x", "adapters/p/x/")
    assert list((tmp_path / "cache").iterdir()) == []
