"""Live figures for the models page: a ring buffer of one-second samples over the last minute.

Each second the sampler (started by the stats router's lifespan) turns what happened since the previous tick
into one ``Second``: classify requests answered and their latency percentiles (``LiveStats`` is a request
observer: the request middleware hands it the record of every answered request), images run and mean batch
size (deltas of the ``vitserve_batch_size`` histogram, summed over its labels so that it survives label
changes), and the queue depth of every loaded version at the tick. ``GET /stats`` returns the series and a
summary over the window: the browser never parses Prometheus text.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
from prometheus_client import CollectorRegistry

from vitserve.service.observability.request_context import RequestRecord

WINDOW_S = 60  # the charts' span
MAX_LATENCIES = 200_000  # bound on the minute's latency samples (about 3 000 requests/s)
CLASSIFY_PATH = "/classify"  # the requests counted: POST to this path
BATCH_METRIC = "vitserve_batch_size"


@dataclass(frozen=True)
class Second:
    """What happened in one sampling interval (``at`` is its end, Unix seconds)."""

    at: float
    span_s: float  # the interval's length (about 1 s; the first one also covers start-up)
    requests: int  # classify requests answered (any status)
    errors: int  # of which answered with status >= 400
    requests_per_s: float
    images_per_s: float  # images through the model (padding excluded)
    batch_size: float | None  # mean images per model call; None when no batch ran
    queue_depth: int  # images waiting, all loaded versions, at the end of the interval
    p50_ms: float | None  # latency percentiles of the requests answered in the interval
    p99_ms: float | None


def percentile_ms(latencies_s: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) in milliseconds, linear interpolation; None for no samples."""
    values = np.fromiter(latencies_s, dtype=np.float64)
    return round(float(np.percentile(values, q)) * 1e3, 3) if values.size else None


def batch_totals(registry: CollectorRegistry) -> tuple[float, float]:
    """(images, batches) run so far: the batch-size histogram's ``_sum`` and ``_count`` over all its labels."""
    images = batches = 0.0
    for family in registry.collect():
        if family.name != BATCH_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{BATCH_METRIC}_sum":
                images += sample.value
            elif sample.name == f"{BATCH_METRIC}_count":
                batches += sample.value
    return images, batches


class LiveStats:
    """The ring buffer: ``record`` per answered classify request (``observe_request`` picks them), ``tick`` once
    per interval, ``snapshot`` for /stats."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s, self.clock = window_s, clock
        self.seconds: deque[Second] = deque(maxlen=window_s)
        self._pending: list[tuple[float, int]] = []  # (latency s, status) since the last tick
        self._minute: deque[tuple[float, float]] = deque(maxlen=MAX_LATENCIES)  # (answered at, latency s)
        self._last_at = clock()
        self._last_totals = (0.0, 0.0)  # the app's metrics registry starts empty

    def observe_request(self, record: RequestRecord, seconds: float) -> None:
        """The request observer: record ``POST /classify`` answers, whatever their status; ignore the rest."""
        if record.method == "POST" and record.path == CLASSIFY_PATH:
            self.record(seconds, record.status)

    def record(self, latency_s: float, status: int) -> None:
        self._pending.append((latency_s, status))
        self._minute.append((self.clock(), latency_s))

    def tick(self, totals: tuple[float, float], queue_depth: int) -> Second:
        """Close the interval: ``totals`` is ``batch_totals`` now, ``queue_depth`` the images waiting now."""
        now = self.clock()
        span = max(now - self._last_at, 1e-3)
        pending, self._pending = self._pending, []
        images, batches = totals[0] - self._last_totals[0], totals[1] - self._last_totals[1]
        latencies = [latency for latency, _ in pending]
        second = Second(
            at=round(now, 3),
            span_s=round(span, 3),
            requests=len(pending),
            errors=sum(status >= 400 for _, status in pending),
            requests_per_s=round(len(pending) / span, 3),
            images_per_s=round(images / span, 3),
            batch_size=round(images / batches, 3) if batches > 0 else None,
            queue_depth=queue_depth,
            p50_ms=percentile_ms(latencies, 50),
            p99_ms=percentile_ms(latencies, 99),
        )
        self.seconds.append(second)
        self._last_at, self._last_totals = now, totals
        self._forget_before(now - self.window_s)  # else samples pile up to the bound while nobody reads /stats
        return second

    def _forget_before(self, oldest: float) -> None:
        while self._minute and self._minute[0][0] < oldest:
            self._minute.popleft()

    def snapshot(self) -> dict[str, object]:
        """The series (oldest first) and a summary over the window; the body of ``GET /stats``."""
        now = self.clock()
        self._forget_before(now - self.window_s)
        recent = [s for s in self.seconds if s.at >= now - self.window_s]
        batches = [s.batch_size for s in recent if s.batch_size is not None]
        latencies = [latency for _, latency in self._minute]
        summary = {
            "requests": len(latencies),
            "requests_per_s": round(len(latencies) / self.window_s, 3),
            "images_per_s": round(sum(s.images_per_s for s in recent) / max(len(recent), 1), 3),
            "batch_size": round(float(np.mean(batches)), 3) if batches else None,
            "queue_depth": recent[-1].queue_depth if recent else 0,
            "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99),
        }
        series = [asdict(s) for s in recent]
        return {"window_s": self.window_s, "interval_s": 1.0, "at": round(now, 3), "summary": summary, "series": series}


async def run_sampler(
    stats: LiveStats,
    totals: Callable[[], tuple[float, float]],
    queue_depth: Callable[[], int],
    interval_s: float = 1.0,
) -> None:
    """Tick ``stats`` every ``interval_s`` until cancelled (the owner's lifespan cancels it)."""
    while True:
        await asyncio.sleep(interval_s)
        stats.tick(totals(), queue_depth())
