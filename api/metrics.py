"""`GET /metrics`: Prometheus text for operators. Figures only, never a tenant's name."""

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.responses import Response


class _ServingCollector:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        adapters = getattr(self.app.state, "adapters", None)
        if adapters is None:
            return
        decisions = CounterMetricFamily(
            "tuneserve_routing_decisions",
            "Requests routed, by base model and outcome: hit (the replica held the adapter), "
            "load (no replica held it), spill (its holders were overloaded), base.",
            labels=["base", "action"])
        for (base, action), count in sorted(adapters.decisions.items()):
            decisions.add_metric([base, action], count)
        yield decisions
        loads = CounterMetricFamily("tuneserve_adapter_loads",
                                    "Adapter registrations with a replica, by result.",
                                    labels=["result"])
        for result, count in sorted(adapters.loads.items()):
            loads.add_metric([result], count)
        yield loads


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServingCollector(app))  # type: ignore[arg-type]

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
