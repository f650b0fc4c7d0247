"""Settings of the inference side: the managed vLLM engine and the adapter cache."""

from pathlib import Path

from storage.base_models import DEFAULT_BASE_MODEL
from storage.settings import StorageSettings


class ServingSettings(StorageSettings):
    # Off: no vLLM is started and chat completions answer 503 (training-only nodes, tests
    # that do not chat).
    serving_enabled: bool = True
    # The base model this node's engine serves; adapters of other bases are not served here.
    served_model: str = DEFAULT_BASE_MODEL
    # 0 picks a free loopback port.
    vllm_port: int = 0
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
