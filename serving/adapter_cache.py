"""Adapters on local disk, fetched from the blob store: the API node's cache (for a replica
that reads the API node's disk) and each Ray replica node's own (`serving/node_adapters.py`).
The cache never deletes the files of an adapter an engine has registered: vLLM reads them
again when its own CPU cache has dropped the weights."""

import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from serving.adapter_errors import ModelNotFound
from storage.blob import BlobStore


class AdapterCache:
    """Adapters on local disk, least recently used evicted past `max_bytes`, except those
    `in_use` names (registered with an engine, which may read them again at any time)."""

    def __init__(self, root: Path, max_bytes: int, store: BlobStore,
                 in_use: Callable[[str], bool] = lambda name: False) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.store = store
        self.in_use = in_use
        self.root.mkdir(parents=True, exist_ok=True)
        self._used: OrderedDict[str, int] = OrderedDict()  # dir name -> bytes
        self._lock = threading.Lock()
        # For /metrics: lookups found on disk, fetches from the blob store and their time.
        self.hits = self.fetches = 0
        self.fetch_seconds = 0.0
        for entry in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if entry.is_dir() and not entry.name.startswith("."):
                self._used[entry.name] = sum(f.stat().st_size for f in entry.iterdir())
            elif entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
        self._names = frozenset(self._used)

    @property
    def names(self) -> frozenset[str]:
        """The adapters on disk now: the router's disk tier for the replicas reading it."""
        return self._names

    def path(self, name: str, prefix: str) -> Path:
        """The local copy of the adapter at blob `prefix`, fetched if missing."""
        target = self.root / name
        with self._lock:
            if name in self._used and target.is_dir():
                self._used.move_to_end(name)
                self.hits += 1
                return target
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.root))
        started = time.monotonic()
        try:
            files = self.store.download_prefix(prefix, tmp)
            if not any(f.name == "adapter_config.json" for f in files):
                raise ModelNotFound(f"adapter files missing under {prefix}")
            size = sum(f.stat().st_size for f in files)
            with self._lock:
                if not target.is_dir():
                    os.rename(tmp, target)
                self._used[name] = size
                self._used.move_to_end(name)
                self._evict(keep=name)
                self._names = frozenset(self._used)
                self.fetches += 1
                self.fetch_seconds += time.monotonic() - started
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _evict(self, keep: str) -> None:
        total = sum(self._used.values())
        for name in list(self._used):
            if total <= self.max_bytes:
                return
            if name == keep or self.in_use(name):
                continue
            total -= self._used.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def drop(self, name: str) -> None:
        with self._lock:
            self._used.pop(name, None)
            self._names = frozenset(self._used)
            shutil.rmtree(self.root / name, ignore_errors=True)
