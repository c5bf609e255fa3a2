"""A replica follows the store (aliases, canaries) written by anyone, leases what it holds, splits canary traffic
and lets its guard abort a failing canary. In-process on the fake engine; tests/e2e/test_fleet_e2e.py runs real
replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.e2e_server import metric
from tests.service.fakes import auth, png
from vitserve.model_store import ModelStore, VersionHeld

pytestmark = pytest.mark.anyio

FAST = {"store_poll_interval_s": 0.05, "follow_retry_s": 0.3, "lease_ttl_s": 2.0, "replica_id": "test-replica"}


async def served_version(client: httpx.AsyncClient, **headers: str) -> int:
    response = await client.post("/classify", files={"file": png(1)}, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["model"]["version"])


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> float:
    """Seconds until ``await predicate()`` is true (fails the test after ``timeout_s``)."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_an_alias_moved_by_another_process_is_followed(serve: Any, store: ModelStore) -> None:
    async with serve(**FAST) as (client, _):
        assert await served_version(client) == 1
        store.set_alias("tiny", "production", 2)  # as the CLI or another replica would
        await wait_for(lambda: _is(client, 2))
        info = (await client.get("/models/tiny")).json()
        store.rollback("tiny")
        await wait_for(lambda: _is(client, 1))
    assert info["serving_version"] == 2
    assert info["sync"] == {
        "replica": "test-replica",
        "followed": "tiny",
        "target_version": 2,
        "target_canary": None,
        "in_sync": True,
        "error": None,
        "retry_in_s": None,
        "guard_abort": None,
    }


async def _is(client: httpx.AsyncClient, version: int) -> bool:
    return await served_version(client) == version


async def test_a_version_that_fails_to_load_leaves_the_old_one_and_is_retried_with_backoff(
    serve: Any, store: ModelStore, factory: Any
) -> None:
    factory.fail_warmup.add("tiny:2")
    async with serve(**FAST) as (client, _):
        store.set_alias("tiny", "production", 2)
        await wait_for(lambda: _has_error(client))
        info = (await client.get("/models/tiny")).json()
        text = (await client.get("/metrics")).text
        await asyncio.sleep(0.5)  # 10 polls: only the backoff's retries (0.3 s, then 0.6 s) may load again
        during = await served_version(client)
        attempts = metric(
            (await client.get("/metrics")).text, "vitserve_store_sync_failures_total", model="tiny", version="2"
        )
        factory.fail_warmup.clear()  # the cause goes away: a later retry succeeds
        await wait_for(lambda: _is(client, 2), timeout_s=5)
    assert info["serving_version"] == 1 and during == 1
    assert info["sync"]["in_sync"] is False and "warm-up failed on purpose" in info["sync"]["error"]
    assert "warm-up failed" in info["versions"][1]["load_error"]
    assert metric(text, "vitserve_store_in_sync", model="tiny") == 0
    assert metric(text, "vitserve_store_sync_failures_total", model="tiny", version="2") == 1
    assert 2 <= attempts <= 3, attempts  # not one per poll (that would be ~10)


async def _has_error(client: httpx.AsyncClient) -> bool:
    return (await client.get("/models/tiny")).json()["sync"]["error"] is not None


async def test_the_replica_leases_what_it_holds_and_releases_it_at_shutdown(serve: Any, store: ModelStore) -> None:
    async with serve(**FAST) as (client, _):
        await client.post("/admin/models/tiny:2/load", headers=auth())
        await asyncio.sleep(0.8)  # a renewal (every TTL / 3)
        held = store.held("tiny")
        with pytest.raises(VersionHeld, match="test-replica"):
            store.delete("tiny:2")
    assert held == {1: ["test-replica"], 2: ["test-replica"]}
    assert store.held("tiny") == {}
    assert store.delete("tiny:2").version == 2


async def test_concurrent_alias_changes_end_with_the_alias_served(serve: Any, store: ModelStore, factory: Any) -> None:
    factory.delay_s = 0.01
    async with serve(store_poll_interval_s=0) as (client, _):  # no polling: the admin routes alone must converge
        for _ in range(3):
            answers = await asyncio.gather(
                *(
                    client.post("/admin/models/tiny/aliases/production", headers=auth(), json={"version": v})
                    for v in (2, 1, 2, 1)
                )
            )
            assert [a.status_code for a in answers] == [200] * 4
            info = (await client.get("/models/tiny")).json()
            assert info["serving_version"] == store.aliases("tiny")["production"]
            assert await served_version(client) == info["serving_version"]


async def test_a_canary_takes_its_weight_of_requests_and_sticky_keys_stay(serve: Any, store: ModelStore) -> None:
    # 2,000 requests from one test client standing for many users: no per-client rate.
    async with serve(canary_sticky_header="x-user", max_delay_ms=1, client_rate=0, **FAST) as (client, _):
        store.set_canary("tiny", "production", 2, 10)
        await wait_for(lambda: _has_canary(client))
        versions: list[int] = []
        for _ in range(80):  # 25 at a time: within the admission limit
            versions += await asyncio.gather(*(served_version(client) for _ in range(25)))
        sticky = {user: {await served_version(client, **{"x-user": user}) for _ in range(5)} for user in "abcdefgh"}
        info = (await client.get("/models/tiny")).json()
    share = versions.count(2) / len(versions)
    print(f"canary share over {len(versions)} requests: {share:.4f} (weight 10 %)")
    assert abs(share - 0.10) <= 0.03
    assert all(len(seen) == 1 for seen in sticky.values())  # each key always lands on the same side
    assert info["canary"]["weight"] == 10 and info["canary"]["canary_version"] == 2
    stats = info["canary"]["stats"]
    assert stats["tiny:2"]["requests"] + stats["tiny:1"]["requests"] == 2000 + 40
    assert stats["tiny:2"]["errors"] == 0 and stats["tiny:1"]["p99_ms"] > 0


async def _has_canary(client: httpx.AsyncClient) -> bool:
    return (await client.get("/models/tiny")).json()["canary"] is not None


async def test_the_guard_aborts_a_failing_canary_in_the_store(serve: Any, store: ModelStore, factory: Any) -> None:
    settings = {**FAST, "canary_guard": True, "canary_min_requests": 20, "max_delay_ms": 1}
    async with serve(**settings) as (client, _):
        store.set_canary("tiny", "production", 2, 50)
        await wait_for(lambda: _has_canary(client))
        factory.engines["tiny:2"].run = _broken  # type: ignore[method-assign]
        codes = []
        for _ in range(200):
            response = await client.post("/classify", files={"file": png(1)})
            codes.append(response.status_code)
            if store.canary("tiny", "production") is None:
                break
        await wait_for(lambda: _no_canary(client))
        await wait_for(lambda: _unloaded(client, 2))  # the former canary drains, then unloads
        info = (await client.get("/models/tiny")).json()
        after = {await served_version(client) for _ in range(20)}
        text = (await client.get("/metrics")).text
    assert store.canary("tiny", "production") is None and store.aliases("tiny") == {"production": 1}
    assert set(codes) == {200, 500} and codes.count(500) >= 20
    assert "tiny:2 aborted by the guard of test-replica: error rate" in info["sync"]["guard_abort"]
    assert after == {1} and not info["versions"][1]["loaded"]  # the canary is unloaded again
    assert metric(text, "vitserve_canary_aborts_total", model="tiny", version="2") == 1


def _broken(batch: np.ndarray) -> np.ndarray:
    raise RuntimeError("the canary's engine fails")


async def _no_canary(client: httpx.AsyncClient) -> bool:
    return (await client.get("/models/tiny")).json()["canary"] is None


async def _unloaded(client: httpx.AsyncClient, version: int) -> bool:
    versions = (await client.get("/models/tiny")).json()["versions"]
    return not next(v for v in versions if v["version"] == version)["loaded"]


async def test_admin_canary_routes_write_the_store(serve: Any, store: ModelStore) -> None:
    store.record_metrics("tiny:1", "val", {"top1": 0.9})
    store.record_metrics("tiny:2", "val", {"top1": 0.5})
    async with serve(**FAST) as (client, _):
        base = "/admin/models/tiny/aliases/production/canary"
        started = await client.post(base, headers=auth(), json={"version": 2, "weight": 25})
        bad = await client.post(base, headers=auth(), json={"version": 2, "weight": 100})
        refused = await client.post(f"{base}/promote", headers=auth(), json={"dataset": "val"})
        aborted = await client.post(f"{base}/abort", headers=auth())
        none_left = await client.post(f"{base}/abort", headers=auth())
        await client.post(base, headers=auth(), json={"version": 2, "weight": 25})
        promoted = await client.post(f"{base}/promote", headers=auth(), json={"force": True})
        now = await served_version(client)
    assert started.status_code == 200 and started.json()["canary"]["weight"] == 25
    assert started.json()["sync"]["target_canary"] == 2
    assert bad.status_code == 422
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "promotion_refused"
    assert aborted.status_code == 200 and aborted.json()["canary"] is None
    assert none_left.status_code == 404 and none_left.json()["error"]["code"] == "model_not_found"
    assert promoted.status_code == 200 and promoted.json()["sync"]["target_version"] == 2 and now == 2
    assert store.aliases("tiny")["production"] == 2 and store.canary("tiny", "production") is None
