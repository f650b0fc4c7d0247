"""Settings of the inference side: the managed vLLM engine and the adapter cache."""

from pathlib import Path

from pydantic import model_validator

from storage.base_models import DEFAULT_BASE_MODEL
from storage.settings import StorageSettings


class ServingSettings(StorageSettings):
    # Off: no vLLM is started and chat completions answer 503 (training-only nodes, tests
    # that do not chat).
    serving_enabled: bool = True
    # The base model this node's engine serves; adapters of other bases are not served here.
    served_model: str = DEFAULT_BASE_MODEL
    # Distinct adapters in one batch: as many as the concurrent requests a CPU node runs,
    # so tenants spread over many adapters still batch together.
    max_loras: int = 8
    # Adapters kept in the engine's memory; past this they are read from disk again.
    max_cpu_loras: int = 32
    # vLLM sizes its LoRA kernels for this rank whatever the adapter's, so it costs speed on
    # every LoRA request; jobs may not train a higher rank than this node serves.
    max_lora_rank: int = 16
    max_model_len: int = 1024
    # GiB of KV cache for vLLM on the CPU (VLLM_CPU_KVCACHE_SPACE). Not used on a GPU, where the
    # KV cache is what `gpu_memory_utilization` leaves after the weights and activations.
    kv_cache_gib: int = 1
    # On a GPU: the share of its memory vLLM takes for weights, activations and KV cache
    # (--gpu-memory-utilization; vLLM's own default is 0.92). Lower it where training jobs share
    # the GPU: vLLM will not start unless that much is free. Not used on the CPU.
    gpu_memory_utilization: float = 0.9
    # Adapters kept registered in the engine at once; the least recently used past this are
    # unloaded (their weights also leave vLLM's own CPU LRU as it needs room).
    max_loaded_adapters: int = 32
    # Local disk cache of adapters fetched from the blob store.
    adapter_cache_dir: Path | None = None
    adapter_cache_bytes: int = 4 << 30
    engine_startup_timeout: float = 300.0
    # A health probe unanswered this long has failed; this many failed in a row restart the
    # engine (one slow probe on a busy node must not kill every stream on it).
    engine_probe_timeout: float = 5.0
    engine_probe_failures: int = 3
    # How long a request waits for a starting or restarting engine before it gets a 503 with
    # retry-after.
    engine_wait_seconds: float = 10.0
    # An adapter the engine failed to load answers its error at once for this long, instead
    # of being fetched and offered to the engine again on every request.
    adapter_failure_ttl_seconds: float = 30.0
    # One request may ask for at most this many generated tokens in all: n x max_tokens (or
    # n x the context, when max_tokens is absent), so no tenant takes the shared engine.
    max_request_tokens: int = 32768
    # A replica holding an adapter with more requests than this waiting is overloaded: the
    # adapter's next request loads it on another replica too (with several replicas).
    routing_overload_waiting: int = 4
    # How often each replica's own load figures are read when several serve one base model.
    routing_metrics_interval: float = 0.5

    @model_validator(mode="after")
    def _adapters_fit_in_the_engine(self) -> "ServingSettings":
        # Registered adapters past vLLM's CPU cache are read from disk again on use, which the
        # disk cache allows; more slots in a batch than in memory is a vLLM start error.
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("TUNESERVE_MAX_CPU_LORAS must be at least TUNESERVE_MAX_LORAS")
        return self
