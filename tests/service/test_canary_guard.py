"""The canary guard's verdicts on recorded outcomes: when it judges, and what it aborts for."""

from __future__ import annotations

import random

from vitserve.service.lifecycle.canary import P99_MIN_SAMPLES, CanarySplit, Guard, VersionStats

SPLIT = CanarySplit(name="tiny", alias="production", stable="tiny:1", canary="tiny:2", weight=30)
GUARD = Guard(min_requests=10, max_error_rate_delta=0.05, max_p99_ratio=2.0)


def _record(stats: VersionStats, ref: str, latencies_ms: list[float], errors: int = 0) -> None:
    for ms in latencies_ms:
        stats.record(ref, ok=True, latency_s=ms / 1e3)
    for _ in range(errors):
        stats.record(ref, ok=False, latency_s=0.001)


def _steady(n: int, ms: float = 5.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [ms * rng.uniform(0.8, 1.2) for _ in range(n)]


def test_no_verdict_below_the_minimum_requests() -> None:
    stats = VersionStats()
    _record(stats, "tiny:1", _steady(50))
    _record(stats, "tiny:2", [], errors=9)  # every canary request failed, but there are only 9
    assert GUARD.verdict(SPLIT, stats) is None
    _record(stats, "tiny:2", [], errors=1)
    assert "error rate 1.000 over 10 requests" in (GUARD.verdict(SPLIT, stats) or "")


def test_one_stall_among_few_requests_does_not_abort_a_healthy_canary() -> None:
    """At tens of requests a side the p99 is the slowest request: one 40 ms stall makes the canary's 8x the
    stable's (how a healthy canary of the fleet test, guard minimum 10 requests, lost its split on a busy CI)."""
    stats = VersionStats()
    _record(stats, "tiny:1", _steady(140, seed=1))
    _record(stats, "tiny:2", [*_steady(59, seed=2), 40.0])
    assert stats.get("tiny:2").p99_s > 2 * stats.get("tiny:1").p99_s  # type: ignore[operator]
    assert GUARD.verdict(SPLIT, stats) is None


def test_a_canary_slower_throughout_is_aborted_once_p99_has_its_samples() -> None:
    stats = VersionStats()
    _record(stats, "tiny:1", _steady(P99_MIN_SAMPLES, ms=5.0, seed=3))
    _record(stats, "tiny:2", _steady(P99_MIN_SAMPLES - 1, ms=15.0, seed=4))
    assert GUARD.verdict(SPLIT, stats) is None  # one short of the samples the p99 rule needs
    _record(stats, "tiny:2", [15.0])
    verdict = GUARD.verdict(SPLIT, stats)
    assert verdict is not None and verdict.startswith("p99 ") and "(allowed 2.00x)" in verdict


def test_one_stall_among_enough_requests_does_not_abort() -> None:
    stats = VersionStats()
    _record(stats, "tiny:1", _steady(3 * P99_MIN_SAMPLES, seed=5))
    _record(stats, "tiny:2", [*_steady(P99_MIN_SAMPLES, seed=6), 40.0])
    assert GUARD.verdict(SPLIT, stats) is None


def test_errors_do_not_count_as_latency_samples() -> None:
    stats = VersionStats()
    _record(stats, "tiny:1", _steady(P99_MIN_SAMPLES, seed=7))
    _record(stats, "tiny:2", _steady(P99_MIN_SAMPLES - 1, ms=15.0, seed=8), errors=5)  # error rate within +0.05
    assert stats.get("tiny:2").requests == P99_MIN_SAMPLES + 4
    assert GUARD.verdict(SPLIT, stats) is None
