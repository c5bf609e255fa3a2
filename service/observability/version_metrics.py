"""Per model and version Prometheus series, and the process and Python collectors, in one app's registry.

Names follow Prometheus conventions: base units in names (``_seconds``), counters end in ``_total`` (the client
library appends it), labels ``model`` and ``version`` separately so that queries can sum over versions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from vitserve.service.observability.request_context import RequestRecord

# Request latency buckets from 5 ms to 30 s (the tiny model answers in milliseconds, ViT-B batches in seconds).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_IMAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_VERSION = ["model", "version"]


class VersionSeries:
    """Series labelled by ``model`` (name) and ``version`` (number): requests, errors, latency, batches, queue."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "vitserve_model_requests", "Requests answered per model version and HTTP status", [*_VERSION, "status"],
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "vitserve_model_errors", "Error responses per model version and error code", [*_VERSION, "code"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "vitserve_model_request_duration_seconds", "Request latency per model version, arrival to answer",
            _VERSION, buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.images = Counter("vitserve_model_images", "Images classified per model version", _VERSION, registry=r)
        self.batch_images = Histogram(
            "vitserve_model_batch_images", "Images per model call", _VERSION, buckets=_IMAGES, registry=r
        )
        self.queue_images = Gauge(
            "vitserve_model_queue_images", "Images waiting for a batch per model version", _VERSION, registry=r
        )
        self.inference_seconds = Histogram(
            "vitserve_model_inference_duration_seconds", "Model call time per batch", _VERSION, buckets=_SECONDS,
            registry=r,
        )  # fmt: skip

    def observe_request(self, record: RequestRecord, seconds: float) -> None:
        """Count a request that reached a model version (others have no version to label)."""
        if record.model is None or record.version is None:
            return
        labels = (record.model, str(record.version))
        self.requests.labels(*labels, str(record.status)).inc()
        self.request_seconds.labels(*labels).observe(seconds)
        if record.error_code is not None:
            self.errors.labels(*labels, record.error_code).inc()
        elif record.images:
            self.images.labels(*labels).inc(record.images)

    def on_batch(self, ref: str, size: int, run_s: float) -> None:
        labels = _split(ref)
        self.batch_images.labels(*labels).observe(size)
        self.inference_seconds.labels(*labels).observe(run_s)

    def on_depth(self, ref: str, depth: int) -> None:
        self.queue_images.labels(*_split(ref)).set(depth)


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """Process (CPU, memory, file descriptors), platform (Python version) and garbage-collector series."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def _split(ref: str) -> tuple[str, str]:
    """``name:version`` → (name, version)."""
    name, _, version = ref.rpartition(":")
    return name, version
