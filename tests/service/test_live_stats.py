"""The live-figures ring buffer on a fake clock: per-second deltas, percentiles, the window, the histogram read."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from tests.service.fakes import Clock
from vitserve.service.core.live_stats import LiveStats, batch_totals, percentile_ms
from vitserve.service.observability.request_context import RequestRecord


def test_a_tick_turns_the_interval_into_one_second() -> None:
    clock = Clock()
    stats = LiveStats(window_s=60, clock=clock)
    stats.tick((0.0, 0.0), queue_depth=0)
    for latency_ms, status in ((10, 200), (20, 200), (30, 200), (40, 503)):
        stats.record(latency_ms / 1e3, status)
    clock.now += 2.0
    second = stats.tick((12.0, 3.0), queue_depth=5)  # 12 images in 3 batches over 2 s
    assert (second.requests, second.errors, second.queue_depth) == (4, 1, 5)
    assert second.requests_per_s == 2.0 and second.images_per_s == 6.0 and second.batch_size == 4.0
    assert second.p50_ms == pytest.approx(25.0) and second.p99_ms == pytest.approx(39.7)
    clock.now += 1.0
    idle = stats.tick((12.0, 3.0), queue_depth=0)
    assert (idle.requests, idle.images_per_s, idle.batch_size, idle.p50_ms) == (0, 0.0, None, None)


def test_the_snapshot_keeps_only_the_window() -> None:
    clock = Clock()
    stats = LiveStats(window_s=10, clock=clock)
    stats.record(0.5, 200)
    stats.tick((0.0, 0.0), 0)
    clock.now += 20  # the first request and tick fall out of the window
    for _ in range(3):
        stats.record(0.1, 200)
    stats.tick((9.0, 3.0), 2)
    body = stats.snapshot()
    assert [s["requests"] for s in body["series"]] == [3]  # type: ignore[union-attr]
    summary = body["summary"]
    assert summary == {
        "requests": 3,
        "requests_per_s": 0.3,
        "images_per_s": pytest.approx(9 / 20),
        "batch_size": 3.0,
        "queue_depth": 2,
        "p50_ms": 100.0,
        "p99_ms": 100.0,
    }


def test_ticks_forget_old_samples_even_when_nobody_reads_the_stats() -> None:
    clock = Clock()
    stats = LiveStats(window_s=10, clock=clock)
    for _ in range(1000):
        stats.record(0.01, 200)
        clock.now += 0.1
        stats.tick((0.0, 0.0), 0)
    assert len(stats._minute) <= 101  # the last 10 s of samples, not all 1000 (no /stats read in between)


def test_as_a_request_observer_it_counts_only_classify_posts() -> None:
    clock = Clock()
    stats = LiveStats(window_s=60, clock=clock)
    stats.tick((0.0, 0.0), queue_depth=0)
    for method, path, status in (
        ("POST", "/classify", 200),
        ("POST", "/classify", 415),
        ("GET", "/classify", 405),
        ("POST", "/v2/models/tiny/infer", 200),
        ("GET", "/healthz", 200),
    ):
        stats.observe_request(RequestRecord("id", method=method, path=path, status=status), 0.01)
    clock.now += 1.0
    second = stats.tick((0.0, 0.0), queue_depth=0)
    assert (second.requests, second.errors, second.p50_ms) == (2, 1, 10.0)


def test_batch_totals_sum_the_histogram_over_its_labels() -> None:
    registry = CollectorRegistry()
    hist = Histogram("vitserve_batch_size", "x", ["model"], buckets=(1, 2, 4, 8), registry=registry)
    assert batch_totals(registry) == (0.0, 0.0)
    hist.labels("a:1").observe(4)
    hist.labels("a:1").observe(2)
    hist.labels("b:3").observe(1)
    assert batch_totals(registry) == (7.0, 3.0)


def test_percentiles_of_nothing_are_none() -> None:
    assert percentile_ms([], 50) is None
    assert percentile_ms([0.001, 0.003], 50) == 2.0
