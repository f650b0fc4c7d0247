"""`GET /metrics`: Prometheus text for operators. Figures only, never a tenant's name.

Request figures are this process's own (scrape every API node); job figures are read from
the shared database at scrape time, so every node reports the same ones."""

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from starlette.responses import Response

from storage.db import Database
from storage.models import FineTuningJob
from storage.states import JobStatus

if TYPE_CHECKING:  # api.errors counts backend failures here, and the services import it
    from api.services import Services, Serving

REGISTRY = CollectorRegistry(auto_describe=False)

HTTP_LATENCY = Histogram(
    "tuneserve_http_request_duration_seconds",
    "HTTP requests by method, route template and status: count and time to the last byte.",
    ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
TIME_TO_FIRST_TOKEN = Histogram(
    "tuneserve_chat_time_to_first_token_seconds",
    "Streamed generations: time from the request to its first content chunk, by base model.",
    ["base"], registry=REGISTRY,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
GENERATED_TOKENS = Counter(
    "tuneserve_chat_generated_tokens",
    "Completion tokens generated, by base model (usage of non-streamed answers, content "
    "chunks of streamed ones).", ["base"], registry=REGISTRY)
GENERATION_SECONDS = Counter(
    "tuneserve_chat_generation_seconds",
    "Seconds spent generating those tokens, by base model: tokens/s is the ratio of the "
    "two rates.", ["base"], registry=REGISTRY)
BACKEND_ERRORS = Counter(
    "tuneserve_backend_errors",
    "Requests answered 503/507 because a backend failed, by part (database, storage, disk).",
    ["part"], registry=REGISTRY)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


class _ServingCollector:
    def __init__(self, serving: Callable[[], "Serving | None"]) -> None:
        self.serving = serving

    def collect(self) -> Iterator[Metric]:
        serving = self.serving()
        if serving is None:
            return
        adapters = serving.adapters
        decisions = CounterMetricFamily(
            "tuneserve_routing_decisions",
            "Requests routed, by base model, outcome (hit: the replica held the adapter; load: "
            "no replica held it; spill: its holders were overloaded; base) and the tier the "
            "adapter was in on the chosen replica (gpu: in a LoRA slot, host: registered, in "
            "the engine's CPU LoRA cache; cold: to be loaded; none: the base model).",
            labels=["base", "action", "tier"])
        for (base, action, tier), count in sorted(adapters.decisions.items()):
            decisions.add_metric([base, action, tier], count)
        yield decisions
        loads = CounterMetricFamily("tuneserve_adapter_loads",
                                    "Adapter registrations with a replica, by result.",
                                    labels=["result"])
        for result, count in sorted(adapters.loads.items()):
            loads.add_metric([result], count)
        yield loads
        yield _counter("tuneserve_adapter_load_seconds",
                       "Seconds spent in successful adapter registrations (mean load time: "
                       "this over tuneserve_adapter_loads{result=\"loaded\"}).",
                       adapters.load_seconds)
        yield _counter("tuneserve_adapter_evictions",
                       "Adapters unregistered from a replica to stay under its LoRA slots.",
                       adapters.evictions)
        yield _counter("tuneserve_adapter_prefetches",
                       "Adapters loaded into a replica ahead of any request for them (the "
                       "consistent router's new homes for an adapter whose demand grew).",
                       adapters.prefetches)
        cache = adapters.cache
        yield _counter("tuneserve_adapter_cache_hits",
                       "Adapter lookups found in this node's disk cache.", cache.hits)
        yield _counter("tuneserve_adapter_cache_fetches",
                       "Adapters fetched from the blob store into the disk cache.",
                       cache.fetches)
        yield _counter("tuneserve_adapter_cache_fetch_seconds",
                       "Seconds spent fetching adapters from the blob store.",
                       cache.fetch_seconds)
        if serving.engine is not None:
            yield _counter("tuneserve_engine_restarts",
                           "Times this node's vLLM engine was restarted.",
                           serving.engine.restarts)


def _job_rows(db: Database) -> tuple[list[Any], Any, Any, Any]:
    now = int(time.time())
    with db.session() as s:
        by_status = list(s.execute(select(FineTuningJob.status, func.count())
                                   .group_by(FineTuningJob.status)))
        oldest = s.scalar(select(func.min(FineTuningJob.created_at))
                          .where(FineTuningJob.status.in_((JobStatus.VALIDATING_FILES,
                                                           JobStatus.QUEUED))))
        waited = s.execute(select(func.count(), func.sum(FineTuningJob.started_at
                                                         - FineTuningJob.created_at))
                           .where(FineTuningJob.started_at >= now - 3600)).one()
        trained = s.execute(select(func.sum(FineTuningJob.trained_tokens),
                                   func.sum(FineTuningJob.finished_at - FineTuningJob.started_at))
                            .where(FineTuningJob.status == JobStatus.SUCCEEDED,
                                   FineTuningJob.finished_at >= now - 86400)).one()
    return by_status, oldest, waited, trained


# /metrics answers without a key (a scraper has none): the job figures, full-table aggregates
# over every tenant's jobs, are read at most this often however often it is asked.
JOB_FIGURES_SECONDS = 5.0


class _JobsCollector:
    def __init__(self, database: Callable[[], Database]) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._figures: tuple[list[Any], Any, Any, Any] | None = None
        self._read_at = 0.0

    def _rows(self) -> tuple[list[Any], Any, Any, Any]:
        # One reader at a time: scrapes that arrive meanwhile wait and share its figures.
        with self._lock:
            if self._figures is None or time.monotonic() - self._read_at > JOB_FIGURES_SECONDS:
                self._figures = _job_rows(self.database())
                self._read_at = time.monotonic()
            return self._figures

    def collect(self) -> Iterator[Metric]:
        by_status, oldest, (started, waited), (tokens, seconds) = self._rows()
        jobs = GaugeMetricFamily("tuneserve_fine_tuning_jobs",
                                 "Fine-tuning jobs by status (all projects).", labels=["status"])
        for status, count in by_status:
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "tuneserve_fine_tuning_oldest_queued_seconds",
            "How long the oldest job not yet started has waited (0: none waits).",
            value=max(0, int(time.time()) - oldest) if oldest else 0)
        yield GaugeMetricFamily(
            "tuneserve_fine_tuning_queue_wait_seconds",
            "Mean wait from creation to start of the jobs started in the last hour.",
            value=(waited or 0) / started if started else 0)
        yield GaugeMetricFamily(
            "tuneserve_training_tokens_per_second",
            "Trained tokens per second of the jobs that succeeded in the last 24 hours.",
            value=(tokens or 0) / seconds if seconds else 0)


def install_metrics(app: FastAPI, services: Callable[[], "Services"]) -> None:
    """`/metrics`, reading the serving and job figures from `services()` at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServingCollector(lambda: services().serving))
    registry.register(_JobsCollector(lambda: services().db))

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
