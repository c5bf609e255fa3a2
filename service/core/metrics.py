"""Prometheus metrics, in a registry owned by one app (several apps in one process never share counters)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vitserve.service.observability.version_metrics import VersionSeries, register_runtime_collectors

# Latency buckets from 1 ms to 30 s: CPU ViT-B batches take seconds, the tiny model milliseconds.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Cold starts from a tiny model's tenth of a second to ViT-B/16 exported and compiled on two cores.
_COLD = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """Every metric the service exports; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "vitserve_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "vitserve_request_seconds", "HTTP request latency", ["route"], buckets=_SECONDS, registry=r
        )
        self.stage_seconds = Histogram(
            "vitserve_stage_seconds",
            "Per-image time in fetch/decode/queue/infer",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_depth = Gauge("vitserve_queue_depth", "Images waiting for a batch", ["model"], registry=r)
        self.queue_wait = Histogram(
            "vitserve_queue_wait_seconds", "Submit to batch start", ["model"], buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram(
            "vitserve_batch_size", "Images per model call", ["model"], buckets=_BATCH, registry=r
        )
        self.batch_seconds = Histogram(
            "vitserve_batch_seconds", "Model call per batch", ["model"], buckets=_SECONDS, registry=r
        )
        self.rows = Counter("vitserve_rows", "Rows computed, padding included", ["model"], registry=r)
        self.padding_rows = Counter(
            "vitserve_padding_rows", "Rows computed only to pad a batch to a compiled size", ["model"], registry=r
        )
        self.rejections = Counter("vitserve_rejections", "Refused or dropped images by reason", ["reason"], registry=r)
        self.ready = Gauge(
            "vitserve_ready", "1 when a model is loaded and warm and the server is not draining", registry=r
        )
        self.loaded = Gauge("vitserve_model_loaded", "Loaded versions (1 = serving)", ["model", "version"], registry=r)
        # Many models on one replica (service/lifecycle/residency.py): loads, evictions, memory, hit rates.
        version = ["model", "version"]
        self.model_loads = Counter(
            "vitserve_model_loads",
            "Versions loaded; cause: demand (a request for a version not loaded) or intent (start-up, store, admin)",
            [*version, "cause"],
            registry=r,
        )
        self.model_evictions = Counter(
            "vitserve_model_evictions", "Versions unloaded to make room in the memory budget", version, registry=r
        )
        self.cold_start_seconds = Histogram(
            "vitserve_cold_start_seconds", "Build and warm-up of a version", ["model"], buckets=_COLD, registry=r
        )
        self.model_memory = Gauge(
            "vitserve_model_memory_bytes",
            "Resident memory of each loaded version, measured at its load",
            version,
            registry=r,
        )
        self.memory_budget = Gauge("vitserve_memory_budget_bytes", "Memory the loaded versions may take", registry=r)
        self.memory_used = Gauge("vitserve_memory_used_bytes", "Memory the loaded versions take, measured", registry=r)
        self.residency = Counter(
            "vitserve_model_routed",
            "Requests routed to a version; outcome: hit (it was resident) or miss (the request waited for its load)",
            [*version, "outcome"],
            registry=r,
        )
        self.result_cache = Counter(
            "vitserve_result_cache",
            "Images of cache-enabled models; outcome: hit (answered from the cache), shared (joined an identical "
            "image in flight) or miss (inferred)",
            [*version, "outcome"],
            registry=r,
        )
        self.per_version = VersionSeries(r)  # model and version as separate labels; process and Python collectors
        register_runtime_collectors(r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observer(self, model: str) -> VersionObserver:
        return VersionObserver(self, model)


class VersionObserver:
    """The batcher's observer for one loaded version (``model`` label ``name:version``)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.metrics, self.model = metrics, model

    def on_batch(self, size: int, queue_waits_s: Sequence[float], run_s: float) -> None:
        m = self.metrics
        m.batch_size.labels(self.model).observe(size)
        m.batch_seconds.labels(self.model).observe(run_s)
        m.per_version.on_batch(self.model, size, run_s)
        for wait in queue_waits_s:
            m.queue_wait.labels(self.model).observe(wait)

    def on_reject(self, reason: str) -> None:
        self.metrics.rejections.labels(reason).inc()

    def on_depth(self, depth: int) -> None:
        self.metrics.queue_depth.labels(self.model).set(depth)
        self.metrics.per_version.on_depth(self.model, depth)

    def on_rows(self, rows: int, padded: int) -> None:
        self.metrics.rows.labels(self.model).inc(padded)
        self.metrics.padding_rows.labels(self.model).inc(padded - rows)
