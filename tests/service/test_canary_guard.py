"""The canary guard's verdicts on recorded outcomes (when it judges, and what it aborts for), and which outcomes
are recorded: only requests the split routed, and only what the version caused."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.fakes import png
from vitserve.model_store import ModelStore
from vitserve.service.classify import version_fault
from vitserve.service.core.errors import DeadlineExceeded, InvalidField
from vitserve.service.lifecycle.canary import P99_MIN_SAMPLES, CanarySplit, Guard, VersionStats, split_routed

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


def test_only_the_request_the_split_routed_carries_its_mark() -> None:
    rng = random.Random(0)
    ref = SPLIT.pick(None, rng)
    assert split_routed(ref)
    assert not split_routed(ref)  # read once: the next request starts unmarked
    SPLIT.pick("user-7", rng)
    assert not split_routed("tiny:9")  # routed, but to another version than the one that ran


def test_a_deadline_the_client_shortened_is_not_the_versions_fault() -> None:
    late = DeadlineExceeded("the request's deadline passed")
    assert version_fault(late) and not version_fault(late, client_deadline=True)
    assert version_fault(RuntimeError("the engine failed"), client_deadline=True)
    assert not version_fault(InvalidField("top_k must be between 1 and 100"))


FOLLOW_FAST = {"store_poll_interval_s": 0.05, "follow_retry_s": 0.3, "lease_ttl_s": 2.0, "replica_id": "test-replica"}
GUARDED = {**FOLLOW_FAST, "canary_guard": True, "canary_min_requests": 20, "max_delay_ms": 1}


async def _canary(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/models/tiny")).json()


async def _wait_for_canary(client: httpx.AsyncClient, present: bool) -> None:
    deadline = time.monotonic() + 5
    while ((await _canary(client))["canary"] is not None) != present:
        assert time.monotonic() < deadline, "the canary did not change in time"
        await asyncio.sleep(0.02)


def _v2(*images: bytes, timeout_us: int) -> dict[str, Any]:
    data = [base64.b64encode(i).decode() for i in images]
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": data}
    return {"inputs": [tensor], "parameters": {"timeout": timeout_us}}


@pytest.mark.anyio
async def test_pinned_requests_with_deadlines_nothing_meets_do_not_abort_a_healthy_canary(
    serve: Any, store: ModelStore
) -> None:
    """The attack of issue 21: hundreds of requests pinned to the canary with a 1 µs deadline, each a 504. They
    judge their caller, not the version: none counts, and the canary stays."""
    async with serve(**GUARDED) as (client, _):
        store.set_canary("tiny", "production", 2, 50)
        await _wait_for_canary(client, present=True)
        tiny = {"timeout_s": 0.000001}
        hostile = []
        for _ in range(12):  # 300 pinned to the canary, 25 at a time
            hostile += await asyncio.gather(
                *(
                    client.post("/classify", params={"model": "tiny:2", **tiny}, files={"file": png(1)})
                    for _ in range(25)
                )
            )
        hostile += [await client.post("/v2/models/tiny/versions/2/infer", json=_v2(png(1), timeout_us=1))]
        hostile += [await client.post("/v2/models/tiny/infer", json=_v2(png(1), timeout_us=1)) for _ in range(20)]
        hostile += [await client.post("/classify", params=tiny, files={"file": png(1)}) for _ in range(20)]
        pinned = [await client.post("/classify?model=tiny:2", files={"file": png(1)}) for _ in range(20)]
        honest = [await client.post("/classify", files={"file": png(1)}) for _ in range(100)]
        await asyncio.sleep(0.3)  # six polls of the guard, each with both sides over its minimum
        info = await _canary(client)
    assert [r.status_code for r in hostile] == [504] * len(hostile) == [504] * 341
    assert {r.status_code for r in pinned + honest} == {200}
    assert store.canary("tiny", "production") is not None and info["sync"]["guard_abort"] is None
    stats = info["canary"]["stats"]
    assert stats["tiny:1"]["errors"] == stats["tiny:2"]["errors"] == 0
    assert stats["tiny:1"]["requests"] + stats["tiny:2"]["requests"] == 100  # only what the split routed
    assert min(stats["tiny:1"]["requests"], stats["tiny:2"]["requests"]) >= GUARDED["canary_min_requests"]


@pytest.mark.anyio
async def test_a_canary_whose_engine_fails_is_still_aborted(serve: Any, store: ModelStore, factory: Any) -> None:
    async with serve(**GUARDED) as (client, _):
        store.set_canary("tiny", "production", 2, 50)
        await _wait_for_canary(client, present=True)

        def broken(batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("the canary's engine fails")

        factory.engines["tiny:2"].run = broken  # type: ignore[method-assign]
        codes = []
        for _ in range(200):
            # pinned requests to the stable version with a tiny deadline beside: they change nothing either way
            await client.post("/classify", params={"model": "tiny:1", "timeout_s": 0.000001}, files={"file": png(2)})
            codes.append((await client.post("/classify", files={"file": png(1)})).status_code)
            if store.canary("tiny", "production") is None:
                break
        await _wait_for_canary(client, present=False)
        info = await _canary(client)
    assert store.canary("tiny", "production") is None and codes.count(500) >= GUARDED["canary_min_requests"]
    assert "tiny:2 aborted by the guard of test-replica: error rate" in info["sync"]["guard_abort"]
