"""Timing loops and latency statistics shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Budget:
    """How long to measure one (engine, batch size): at least ``min_iters`` runs and ``min_time_s`` seconds,
    stopping at ``max_iters`` runs; ``warmup`` untimed runs first."""

    warmup: int = 1
    min_iters: int = 3
    min_time_s: float = 1.0
    max_iters: int = 50


def percentile_ms(samples_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples_s) * 1e3, q))


def measure(run: Callable[[], object], batch: int, budget: Budget) -> dict[str, float]:
    """Time ``run`` (one batch of ``batch`` images): images/s over all timed runs, p50/p99 ms per batch."""
    for _ in range(budget.warmup):
        run()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < budget.max_iters and (
        len(samples) < budget.min_iters or time.perf_counter() - started < budget.min_time_s
    ):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return {
        "iters": len(samples),
        "images_per_s": batch * len(samples) / sum(samples),
        "p50_ms": percentile_ms(samples, 50),
        "p99_ms": percentile_ms(samples, 99),
    }


def measure_interleaved(
    runs: Mapping[str, Callable[[], object]], batch: int, budget: Budget
) -> dict[str, dict[str, float]]:
    """Time several runners round-robin, one batch each per round, so that a shared machine's changing load
    falls on all of them alike. Stops after ``min_iters`` rounds once ``min_time_s`` per runner has passed,
    or at ``max_iters`` rounds. Returns ``measure``'s statistics per runner."""
    for run in runs.values():
        for _ in range(budget.warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    started = time.perf_counter()
    rounds = 0
    while rounds < budget.max_iters and (
        rounds < budget.min_iters or time.perf_counter() - started < budget.min_time_s * len(runs)
    ):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {
        name: {
            "iters": len(times),
            "images_per_s": batch * len(times) / sum(times),
            "p50_ms": percentile_ms(times, 50),
            "p99_ms": percentile_ms(times, 99),
        }
        for name, times in samples.items()
    }
