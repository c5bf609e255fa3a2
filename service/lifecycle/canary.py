"""Canary routing and judgement: a weighted split between two loaded versions of a name, per-version request
statistics, and the guard that decides when a canary does worse than its stable version.

The statistics are kept here, per version and since the split began, rather than read back from the
Prometheus metrics: the guard compares the two sides over the same window, and a counter that other code
may relabel or reset is not a measurement it can rely on.

They judge the version, not its callers, so they hold only what the split chose: a request counts when the
split routed it (``CanarySplit.pick`` marks it, ``split_routed`` reads the mark), never when a client pinned
the version (``name:V``, or an alias other than the split's), and only with an outcome the version caused (the
classifier decides which: ``service.classify.version_fault``). Otherwise any client could abort a healthy canary
fleet-wide by pinning a few hundred requests to it with a deadline nothing can meet.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

# Latency samples kept per version: enough for a stable p99 (100 samples above it), bounded memory.
_MAX_SAMPLES = 10_000
# Successful requests each side needs before the guard compares p99s. The p99 of fewer is the slowest request or
# next to it, so one stall (a noisy neighbour, a new version's first batches) would abort a healthy canary; of
# 200 it lies among the three slowest.
P99_MIN_SAMPLES = 200

# The version the split routed the current request to: set by ``CanarySplit.pick``, read once by ``split_routed``.
# Routing and the classify stages run in the request's own task, so they share this context and no other request
# sees the mark.
_routed_to: ContextVar[str | None] = ContextVar("vitserve_split_routed", default=None)


@dataclass(frozen=True)
class CanarySplit:
    """``weight`` percent of a name's unpinned requests go to ``canary``, the rest to ``stable`` (refs ``name:V``)."""

    name: str
    alias: str
    stable: str
    canary: str
    weight: float
    started_at: float = field(default_factory=time.time)

    def pick(self, key: str | None, rng: random.Random) -> str:
        """The ref a request goes to: by ``key``'s hash when given (the same key, the same side), else at random."""
        if key is not None:
            # 10,000 buckets: weights to 0.01 %; sha256 so that keys spread evenly whatever they look like.
            bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10_000
            ref = self.canary if bucket < self.weight * 100 else self.stable
        else:
            ref = self.canary if rng.random() * 100 < self.weight else self.stable
        _routed_to.set(ref)  # this request counts in the guard's statistics (``split_routed``)
        return ref


def split_routed(ref: str) -> bool:
    """Whether the current request was routed to ``ref`` by a canary split (not pinned to it). Reads the mark
    ``CanarySplit.pick`` left and clears it: call once per request, before anything else can fail."""
    routed = _routed_to.get() == ref
    _routed_to.set(None)
    return routed


@dataclass
class Side:
    """One version's requests, errors and latencies since the split began."""

    requests: int = 0
    errors: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_SAMPLES))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_s(self) -> float | None:
        return float(np.percentile(np.fromiter(self.latencies_s, float), 99)) if self.latencies_s else None

    def summary(self) -> dict[str, float | int | None]:
        p99 = self.p99_s
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p99_ms": None if p99 is None else round(p99 * 1e3, 3),
        }


class VersionStats:
    """Per-version (``name:V``) request outcomes, recorded by the classifier, read by the guard and /models: only
    requests the split routed, and only outcomes the version caused (see the module docstring)."""

    def __init__(self) -> None:
        self.sides: dict[str, Side] = {}

    def record(self, ref: str, *, ok: bool, latency_s: float) -> None:
        side = self.sides.setdefault(ref, Side())
        side.requests += 1
        if ok:
            side.latencies_s.append(latency_s)  # a failure's latency says nothing about the model's speed
        else:
            side.errors += 1

    def reset(self, *refs: str) -> None:
        for ref in refs:
            self.sides[ref] = Side()

    def get(self, ref: str) -> Side:
        return self.sides.get(ref) or Side()


@dataclass(frozen=True)
class Guard:
    """When to abort a canary: both sides have ``min_requests`` and the canary's error rate exceeds the stable
    one's by more than ``max_error_rate_delta``, or (once both have ``P99_MIN_SAMPLES`` successful requests) its
    p99 is more than ``max_p99_ratio`` times the stable's."""

    min_requests: int
    max_error_rate_delta: float
    max_p99_ratio: float

    def verdict(self, split: CanarySplit, stats: VersionStats) -> str | None:
        """Why the canary should be aborted, or ``None`` (also while there are too few requests to judge)."""
        stable, canary = stats.get(split.stable), stats.get(split.canary)
        if min(stable.requests, canary.requests) < self.min_requests:
            return None
        delta = canary.error_rate - stable.error_rate
        if delta > self.max_error_rate_delta:
            return (
                f"error rate {canary.error_rate:.3f} over {canary.requests} requests vs {stable.error_rate:.3f} "
                f"for {split.stable} (allowed +{self.max_error_rate_delta:.3f})"
            )
        if min(len(stable.latencies_s), len(canary.latencies_s)) < P99_MIN_SAMPLES:
            return None
        canary_p99, stable_p99 = canary.p99_s, stable.p99_s
        if canary_p99 is not None and stable_p99 and canary_p99 > self.max_p99_ratio * stable_p99:
            return (
                f"p99 {canary_p99 * 1e3:.1f} ms vs {stable_p99 * 1e3:.1f} ms for {split.stable} "
                f"(allowed {self.max_p99_ratio:.2f}x)"
            )
        return None
