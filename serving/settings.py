"""Settings of the inference side: the managed vLLM engine or the cluster's replicas, the
adapter cache, routing."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from serving.router import Policy
from storage.base_models import DEFAULT_BASE_MODEL
from storage.settings import StorageSettings, json_object


@dataclass(frozen=True)
class ServedModel:
    """A base model served on the cluster, by `min_replicas` to `max_replicas` replicas."""

    model: str
    min_replicas: int = 1
    max_replicas: int = 1


class ServingSettings(StorageSettings):
    # Off: no vLLM is started and chat completions answer 503 (training-only nodes, tests
    # that do not chat).
    serving_enabled: bool = True
    # Where inference runs: `local` (one vLLM engine that this API node starts and supervises)
    # or `ray` (vLLM replicas on the Ray cluster at TUNESERVE_RAY_ADDRESS, shared by every
    # API node, for the bases in TUNESERVE_SERVED_MODELS).
    serving: Literal["local", "ray"] = "local"
    # The base model this node's engine serves (`local`); adapters of other bases are not
    # served here.
    served_model: str = DEFAULT_BASE_MODEL
    # `ray`: JSON list of the bases the cluster serves and how many replicas each may have,
    # [{"model": NAME, "min_replicas": 1, "max_replicas": 2}]; empty: TUNESERVE_SERVED_MODEL
    # on one replica.
    served_models: str = ""
    # Jobs may train a base that is not served here (their models answer `model_not_served`
    # until some replica serves the base); off, such a job is a 400 at creation.
    train_unserved_bases: bool = False
    # `ray`: what each replica holds on its node (1 GPU by default; 0 on a CPU cluster) and
    # any extra Ray resources it asks for, as a JSON object (e.g. {"accelerator_type:H100":
    # 0.001}).
    ray_gpus_per_replica: float = 1.0
    ray_replica_resources: str = ""
    # `ray`: what the cluster's head runs to keep the replicas (a Ray job; its Python must
    # have tuneserve).
    ray_serving_command: str = "python -m serving.ray_replicas"
    # `ray`: a replica whose health beat has not moved for this long, and that answered no
    # request meanwhile, gets no requests (one that a request could not reach gets none at
    # once). As long as its own supervisor waits before a restart: 3 probes of 5 s.
    replica_heartbeat_timeout: float = 15.0
    # `ray`: a base gets one more replica (up to its max) while its replicas have this many
    # requests waiting on average, and one fewer (down to its min) once all of them have
    # been idle this long.
    replica_scale_up_waiting: float = 4.0
    replica_scale_down_idle_seconds: float = 300.0
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
    # A request to an engine that sends nothing for this long (between two bytes of a
    # stream, or before a whole non-streamed answer) is given up; connecting gets 5 s.
    engine_read_timeout: float = 600.0
    # An adapter the engine failed to load answers its error at once for this long, instead
    # of being fetched and offered to the engine again on every request.
    adapter_failure_ttl_seconds: float = 30.0
    # One request may ask for at most this many generated tokens in all: n x max_tokens (or
    # n x the context, when max_tokens is absent), so no tenant takes the shared engine.
    max_request_tokens: int = 32768
    # A replica holding an adapter with more requests than this waiting is overloaded: the
    # adapter's next request loads it on another replica too (with several replicas).
    routing_overload_waiting: int = 4
    # How a request's replica is chosen: `affinity` (the replica holding its adapter unless
    # overloaded, then one with a free slot, then the least loaded; see serving/router.py), or
    # a baseline to compare it with: `round_robin`, `least_loaded`, `adapter_hash`.
    routing_policy: Policy = "affinity"
    # How often each replica's own load figures are read when several serve one base model.
    routing_metrics_interval: float = 0.5

    def served_model_groups(self) -> list[ServedModel]:
        if not self.served_models:
            return [ServedModel(self.served_model)]
        groups = [ServedModel(**entry) for entry in json.loads(self.served_models)]
        for group in groups:
            # At least one replica: nothing would ask for the first one of a base scaled
            # to zero (a request finds no replica whose load could say it waits).
            if not 1 <= group.min_replicas <= group.max_replicas:
                raise ValueError(f"TUNESERVE_SERVED_MODELS: {group.model} needs "
                                 "1 <= min_replicas <= max_replicas")
        return groups

    def served_bases(self) -> list[str] | None:
        """The bases this deployment serves; None where this node does not serve (a
        training-only node cannot tell)."""
        if not self.serving_enabled:
            return None
        if self.serving == "ray":
            return [group.model for group in self.served_model_groups()]
        return [self.served_model]

    def ray_replica_resource_map(self) -> dict[str, float] | None:
        return json_object(self.ray_replica_resources, "TUNESERVE_RAY_REPLICA_RESOURCES")

    @model_validator(mode="after")
    def _serving_on_ray_has_a_cluster(self) -> "ServingSettings":
        if self.serving == "ray" and self.serving_enabled:
            if not self.ray_address:
                raise ValueError("TUNESERVE_SERVING=ray needs TUNESERVE_RAY_ADDRESS")
            self.served_model_groups()
            self.ray_replica_resource_map()
        return self

    @model_validator(mode="after")
    def _adapters_fit_in_the_engine(self) -> "ServingSettings":
        # Registered adapters past vLLM's CPU cache are read from disk again on use, which the
        # disk cache allows; more slots in a batch than in memory is a vLLM start error.
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("TUNESERVE_MAX_CPU_LORAS must be at least TUNESERVE_MAX_LORAS")
        return self
