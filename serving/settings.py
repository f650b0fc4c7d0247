"""Settings of the inference side: the managed vLLM engine or the cluster's replicas, the
adapter cache, routing."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

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
    serving_enabled: bool = Field(
        True,
        description=(
            "Start the model engine for chat completions. Off: no vLLM is started and chat "
            "completions answer 503 (training-only nodes, tests that do not chat)."
        ),
    )
    serving: Literal["local", "ray"] = Field(
        "local",
        description=(
            "Where inference runs: `local` (one vLLM engine that this API node starts and "
            "supervises) or `ray` (vLLM replicas on the Ray cluster at `TUNESERVE_RAY_ADDRESS`, "
            "shared by every API node, for the bases in `TUNESERVE_SERVED_MODELS`; see "
            "docs/scale-out.md)."
        ),
    )
    served_model: str = Field(
        DEFAULT_BASE_MODEL,
        description=(
            "The base model this node's engine serves (`local`); adapters of other bases are not "
            "served here."
        ),
    )
    served_models: str = Field(
        "",
        description=(
            "`ray`: JSON list of the bases the cluster serves and how many replicas each may have, "
            "`[{\"model\": NAME, \"min_replicas\": 1, \"max_replicas\": 2}]` (1 <= min <= max); "
            "empty: `TUNESERVE_SERVED_MODEL` on one replica. While a served base has no live "
            "replica (starting, restarting) its requests get 503 with `retry-after`."
        ),
    )
    train_unserved_bases: bool = Field(
        False,
        description=(
            "Jobs may train a base that is not served here (their models answer `model_not_served` "
            "until some replica serves the base); off, such a job is a 400 `model_not_served` at "
            "creation."
        ),
    )
    ray_gpus_per_replica: float = Field(
        1.0,
        description="`ray`: GPUs each replica holds on its node (0 on a CPU cluster).",
    )
    ray_replica_resources: str = Field(
        "",
        description=(
            "`ray`: extra Ray resources each replica asks for, as a JSON object (e.g. "
            "`{\"accelerator_type:H100\": 0.001}`)."
        ),
    )
    ray_serving_command: str = Field(
        "python -m serving.ray_replicas",
        description=(
            "`ray`: what the cluster's head runs to keep the replicas (the replicas' controller, a "
            "Ray job; its Python must have tuneserve)."
        ),
    )
    replica_heartbeat_timeout: float = Field(
        15.0,
        description=(
            "`ray`: a replica whose health beat has not moved for this long, and that answered no "
            "request meanwhile, gets no requests (one that a request could not reach gets none at "
            "once). As long as its own supervisor waits before a restart: 3 probes of 5 s."
        ),
    )
    replica_scale_up_waiting: float = Field(
        4.0,
        description=(
            "`ray`: a base gets one more replica (up to its max) while its replicas have this many "
            "requests waiting on average."
        ),
    )
    replica_scale_down_idle_seconds: float = Field(
        300.0,
        description=(
            "`ray`: a base gets one replica fewer (down to its min) once all of its replicas have "
            "been idle this long."
        ),
    )
    max_loras: int = Field(
        8,
        description=(
            "vLLM's LoRA slots in a batch: distinct adapters in one batch. As many as the "
            "concurrent requests a CPU node runs, so tenants spread over many adapters still batch "
            "together; raise it on a GPU, which batches more requests."
        ),
    )
    max_cpu_loras: int = Field(
        32,
        description=(
            "Adapters kept in the engine's memory; past this they are read from disk again. At "
            "least `TUNESERVE_MAX_LORAS`."
        ),
    )
    max_lora_rank: int = Field(
        16,
        description=(
            "The largest LoRA rank served. vLLM sizes its LoRA kernels (and their memory) for this "
            "rank whatever the adapter's, so it costs speed on every LoRA request; jobs may not "
            "train a higher rank than this node serves."
        ),
    )
    max_model_len: int = Field(
        1024,
        description=(
            "vLLM's context length in tokens (`--max-model-len`); raise it for a bigger base (its "
            "KV cache grows with it)."
        ),
    )
    kv_cache_gib: int = Field(
        1,
        description=(
            "GiB of KV cache for vLLM on the CPU (`VLLM_CPU_KVCACHE_SPACE`). Not used on a GPU, "
            "where the KV cache is what `gpu_memory_utilization` leaves after the weights and "
            "activations."
        ),
    )
    gpu_memory_utilization: float = Field(
        0.9,
        description=(
            "On a GPU: the share of its memory vLLM takes for weights, activations and KV cache "
            "(`--gpu-memory-utilization`; vLLM's own default is 0.92). Lower it (e.g. 0.5) where "
            "training jobs share the GPU: vLLM will not start unless that much is free. Not used "
            "on the CPU."
        ),
    )
    max_loaded_adapters: int = Field(
        32,
        description=(
            "Adapters kept registered in the engine at once; the least recently used past this are "
            "unloaded (their weights also leave vLLM's own CPU LRU as it needs room)."
        ),
    )
    adapter_cache_dir: Path | None = Field(
        None,
        description=(
            "Local disk cache of adapters fetched from the blob store; empty means "
            "`{data_dir}/adapter-cache`."
        ),
    )
    adapter_cache_bytes: int = Field(
        4 << 30,
        description=(
            "Size of the local disk cache of adapters; it never deletes an adapter an engine has "
            "registered."
        ),
    )
    engine_startup_timeout: float = Field(
        300.0,
        description="Seconds vLLM gets to become healthy before it is restarted.",
    )
    engine_probe_timeout: float = Field(
        5.0,
        description="A health probe of the engine unanswered this long (seconds) has failed.",
    )
    engine_probe_failures: int = Field(
        3,
        description=(
            "This many failed health probes in a row (with no proxied answer meanwhile) restart "
            "the engine: one slow probe on a busy node must not kill every stream on it."
        ),
    )
    engine_wait_seconds: float = Field(
        10.0,
        description=(
            "How long a request waits for a starting or restarting engine before it gets a 503 "
            "with `retry-after`."
        ),
    )
    engine_read_timeout: float = Field(
        600.0,
        description=(
            "A request to an engine that sends nothing for this long (between two bytes of a "
            "stream, or before a whole non-streamed answer) is given up: 504 `engine_timeout` (the "
            "engine stays in rotation; the request is not sent again). Connecting gets 5 s."
        ),
    )
    adapter_failure_ttl_seconds: float = Field(
        30.0,
        description=(
            "An adapter the engine failed to load answers `model_load_failed` at once for this "
            "long, instead of being fetched and offered to the engine again on every request."
        ),
    )
    max_request_tokens: int = Field(
        32768,
        description=(
            "One request may ask for at most this many generated tokens in all: `n` x `max_tokens` "
            "(or `n` x the context, when `max_tokens` is absent), so no tenant takes the shared "
            "engine."
        ),
    )
    routing_overload_waiting: int = Field(
        4,
        description=(
            "`affinity` routing, with several replicas of a base: a replica holding an adapter "
            "with more requests than this waiting is overloaded, so the adapter's next request "
            "loads it on another replica too (a spill)."
        ),
    )
    routing_policy: Policy = Field(
        "consistent",
        description=(
            "How a request's replica is chosen: `consistent` (each adapter has homes on a hash "
            "ring of the replicas, more for an adapter in demand; the one with the shortest queue "
            "plus the cost of where the adapter is there (GPU slot, host memory, neither), never "
            "past 1.5x the average load; see `serving/router.py`), `affinity` (the replica holding "
            "its adapter unless overloaded, then one with a free slot, then the least loaded), or "
            "a baseline to compare them with: `round_robin`, `least_loaded`, `adapter_hash`."
        ),
    )
    routing_metrics_interval: float = Field(
        0.5,
        description=(
            "How often (seconds) each replica's own load figures (vLLM's metrics) are read when "
            "several serve one base model."
        ),
    )

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
