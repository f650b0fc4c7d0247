"""The adapter lifecycle, with one owner: resolve a model name to the project's adapter,
fetch it from the blob store into a local disk cache, register it with the vLLM engine on
first use, and unregister the least recently used past the configured number."""

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from serving.engine import EngineUnavailable, VLLMEngine, send_with_retry
from serving.settings import ServingSettings
from storage.base_models import base_models
from storage.blob import BlobStore
from storage.db import Database
from storage.models import FineTunedModel

log = logging.getLogger("tuneserve.adapters")


class ModelNotFound(LookupError):
    """No such model for this project (another project's model is not found either)."""


class ModelNotServed(LookupError):
    """A model of another base than the one this node's engine serves."""


class AdapterLoadError(RuntimeError):
    """The engine refused or failed to load an adapter."""


@dataclass(frozen=True)
class Route:
    """Where a request goes: `served` is the name the engine knows the model by."""

    requested: str
    served: str


def served_name(model_id: str) -> str:
    # Opaque, so tenants' model names never reach the engine or its logs.
    return "lora-" + hashlib.sha256(model_id.encode()).hexdigest()[:24]


class AdapterCache:
    """Adapters on local disk, least recently used evicted past `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int, store: BlobStore) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.store = store
        self.root.mkdir(parents=True, exist_ok=True)
        self._used: OrderedDict[str, int] = OrderedDict()  # dir name -> bytes
        self._lock = threading.Lock()
        for entry in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if entry.is_dir() and not entry.name.startswith("."):
                self._used[entry.name] = sum(f.stat().st_size for f in entry.iterdir())
            elif entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)

    def path(self, name: str, prefix: str) -> Path:
        """The local copy of the adapter at blob `prefix`, fetched if missing."""
        target = self.root / name
        with self._lock:
            if name in self._used and target.is_dir():
                self._used.move_to_end(name)
                return target
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.root))
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
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _evict(self, keep: str) -> None:
        while sum(self._used.values()) > self.max_bytes and len(self._used) > 1:
            name = next(iter(self._used))
            if name == keep:
                self._used.move_to_end(name)
                continue
            self._used.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)

    def drop(self, name: str) -> None:
        with self._lock:
            self._used.pop(name, None)
            shutil.rmtree(self.root / name, ignore_errors=True)


class AdapterManager:
    def __init__(self, settings: ServingSettings, db: Database, store: BlobStore,
                 engine: VLLMEngine) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.cache = AdapterCache(
            settings.adapter_cache_dir or settings.data_dir / "adapter-cache",
            settings.adapter_cache_bytes, store,
        )
        self.base_names = set(base_models(settings))
        # Registered with the engine: served name -> engine generation, in LRU order.
        self._loaded: OrderedDict[str, int] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._http = httpx.AsyncClient(timeout=120)

    async def close(self) -> None:
        await self._http.aclose()

    async def route(self, project_id: str, model: str) -> Route:
        served_base = self.engine.model.name
        if model == served_base:
            return Route(model, model)
        if model in self.base_names:
            raise ModelNotServed(model)
        row = await asyncio.to_thread(self._lookup, project_id, model)
        if row is None:
            raise ModelNotFound(model)
        if row.base_model != served_base:
            raise ModelNotServed(model)
        name = served_name(row.id)
        await self._ensure_loaded(name, row.adapter_prefix)
        return Route(model, name)

    def _lookup(self, project_id: str, model: str) -> FineTunedModel | None:
        with self.db.session() as s:
            return s.scalar(select(FineTunedModel).where(
                FineTunedModel.id == model, FineTunedModel.project_id == project_id))

    async def _ensure_loaded(self, name: str, prefix: str) -> None:
        if self._loaded.get(name) == self.engine.generation:
            self._loaded.move_to_end(name)
            return
        # One load per adapter however many first requests arrive; other models go on.
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if self._loaded.get(name) == self.engine.generation:
                return
            started = time.monotonic()
            path = await asyncio.to_thread(self.cache.path, name, prefix)
            await self.engine.ready.wait()
            request = self._http.build_request(
                "POST", f"{self.engine.url}/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": str(path), "load_inplace": True},
            )
            try:
                response = await send_with_retry(self._http, request)
            except httpx.TransportError as exc:
                self.engine.mark_unreachable()
                raise EngineUnavailable from exc
            if response.status_code != 200:
                raise AdapterLoadError(response.text)
            self._loaded[name] = self.engine.generation
            self._loaded.move_to_end(name)
            log.info("loaded adapter %s in %.3f s", name, time.monotonic() - started)
        await self._evict()

    async def _evict(self) -> None:
        while len(self._loaded) > self.settings.max_loaded_adapters:
            name, generation = next(iter(self._loaded.items()))
            self._loaded.pop(name)
            if generation == self.engine.generation:
                await self._unload(name)

    async def _unload(self, name: str) -> None:
        # An engine that is down has forgotten it already.
        with contextlib.suppress(httpx.HTTPError):
            await self._http.post(f"{self.engine.url}/v1/unload_lora_adapter",
                                  json={"lora_name": name})

    async def forget(self, model_id: str) -> None:
        """A deleted model: unregistered from the engine and dropped from the disk cache."""
        name = served_name(model_id)
        if self._loaded.pop(name, None) == self.engine.generation:
            await self._unload(name)
        await asyncio.to_thread(self.cache.drop, name)
