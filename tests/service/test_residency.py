"""The memory budget's bookkeeping: measured costs (what an unload gave back meanwhile added back, never below the
weights), estimates before a first load, the LRU choice of victims, the default budget from the cgroup; and the
duplicate-image cache."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import numpy as np
import pytest

from tests.tiny import LABELS, TINY, TINY_DATA
from vitserve.model_store import Card
from vitserve.service.core.result_cache import ResultCache, content_key
from vitserve.service.lifecycle.residency import MIB, Residency, default_budget, memory_limit, param_count

pytestmark = pytest.mark.anyio


def card(name: str, version: int = 1, **config: int) -> Card:
    return Card(name=name, version=version, config=TINY.replace(**config), data=TINY_DATA, labels=LABELS)


class FakeRss:
    def __init__(self) -> None:
        self.bytes = 500 * MIB

    def __call__(self) -> int:
        return self.bytes


def test_a_cost_is_the_rss_delta_with_what_unloads_gave_back_meanwhile_added_back() -> None:
    rss = FakeRss()
    residency = Residency(1000 * MIB, read_rss=rss)
    a = card("a")
    mark = residency.mark()
    rss.bytes += 120 * MIB
    assert residency.loaded(a, mark, "fp32", cause="intent") == 120 * MIB
    mark = residency.mark()
    residency.unloaded("a:1")  # an unload while b loads: 120 MiB go back to the system
    rss.bytes += 80 * MIB - 120 * MIB
    assert residency.loaded(card("b"), mark, "fp32", cause="demand") == 80 * MIB
    assert residency.used == 80 * MIB and residency.costs == {"b:1": 80 * MIB}


def test_a_cost_is_never_below_the_weights_at_the_precision_run() -> None:
    rss = FakeRss()
    residency = Residency(1000 * MIB, read_rss=rss)
    big = card("big", embed_dim=256, num_heads=4)
    assert residency.loaded(big, residency.mark(), "fp32", cause="intent") == 4 * param_count(big.config)
    assert residency.loaded(card("small"), residency.mark(), "int8", cause="intent") == param_count(TINY)


def test_estimates_before_a_first_load() -> None:
    rss = FakeRss()
    residency = Residency(1000 * MIB, read_rss=rss)
    first, guess = card("a"), 16 * MIB + 4 * 4 * param_count(TINY)
    assert residency.estimate(first, "fp32") == guess  # nothing measured yet: a first guess
    mark = residency.mark()
    rss.bytes += 300 * MIB  # the process's first load: the engine libraries' set-up too
    residency.loaded(first, mark, "fp32", cause="intent")
    assert residency.estimate(first, "fp32") == 300 * MIB  # its own last measurement
    assert residency.estimate(card("b"), "fp32") == guess  # not an estimate for others: the set-up is paid
    mark = residency.mark()
    rss.bytes += 50 * MIB
    residency.loaded(card("b"), mark, "fp32", cause="demand")
    assert residency.estimate(card("c"), "fp32") == 50 * MIB  # the same architecture's
    assert residency.estimate(card("c"), "int8") == guess  # another precision: a first guess


def test_victims_are_the_least_recently_used_until_the_need_fits() -> None:
    rss = FakeRss()
    residency = Residency(300 * MIB, read_rss=rss)
    for name in ("a", "b", "c"):
        mark = residency.mark()
        rss.bytes += 100 * MIB
        residency.loaded(card(name), mark, "fp32", cause="demand")
    residency.touch("a:1")  # b is now the least recently used, then c, then a
    assert residency.victims(100 * MIB, {"a:1", "b:1", "c:1"}) == (["b:1"], True)
    assert residency.victims(150 * MIB, {"a:1", "b:1", "c:1"}) == (["b:1", "c:1"], True)
    assert residency.victims(100 * MIB, {"a:1", "c:1"}) == (["c:1"], True)  # b is not evictable (pinned)
    assert residency.victims(500 * MIB, {"a:1"}) == (["a:1"], False)
    assert residency.victims(0, {"a:1"}) == ([], True)


def test_hits_and_misses_make_the_hit_rate() -> None:
    residency = Residency(MIB)
    for hit in (True, True, True, False):
        residency.touch("a:1", hit=hit)
    assert residency.use("a:1").hit_rate == 0.75 and residency.use("b:1").hit_rate is None


def test_the_memory_limit_comes_from_the_cgroup_else_the_machine(tmp_path: Path) -> None:
    cgroup = tmp_path / "proc-cgroup"
    cgroup.write_text("0::/pod/replica\n")
    root = tmp_path / "sys"
    (root / "pod/replica").mkdir(parents=True)
    (root / "pod/replica/memory.max").write_text("4294967296\n")
    assert memory_limit(root, cgroup) == 4 * 1024**3  # cgroup v2, the process's own cgroup
    (root / "pod/replica/memory.max").write_text("max\n")
    v1 = root / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("2147483648\n")
    assert memory_limit(root, cgroup) == 2 * 1024**3  # v2 unlimited; a v1 limit at the root of the view
    (v1 / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    machine = memory_limit(root, cgroup)
    assert machine is not None and machine > 2 * 1024**3  # no limit anywhere: the machine's memory
    assert default_budget(512 * MIB, limit=4096 * MIB, rss=1024 * MIB) == 2560 * MIB
    assert default_budget(512 * MIB, limit=1024 * MIB, rss=1024 * MIB) == 0


async def test_the_result_cache_is_bounded_and_least_recently_used_first() -> None:
    cache: ResultCache[int] = ResultCache(2)
    computed: list[str] = []

    async def compute(key: str) -> int:
        computed.append(key)
        return len(computed)

    for key in ("a", "b", "a", "c", "b"):  # c pushes out b (a was used after b)
        await cache.once(key, functools.partial(compute, key), wait_s=1)
    assert computed == ["a", "b", "c", "b"] and len(cache) == 2
    assert cache.counts == {"hit": 1, "shared": 0, "miss": 4}


async def test_identical_keys_in_flight_share_one_computation_and_never_inherit_a_failure() -> None:
    cache: ResultCache[str] = ResultCache(8)
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(outcome: str) -> str:
        calls.append(outcome)
        await release.wait()
        if outcome == "fail":
            raise RuntimeError("the leader's request failed")
        return outcome

    shared = [asyncio.create_task(cache.once("k", lambda: slow("ok"), wait_s=5)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    assert [await t for t in shared] == [("ok", "miss"), ("ok", "shared"), ("ok", "shared")] and calls == ["ok"]
    release.clear()
    leader = asyncio.create_task(cache.once("x", lambda: slow("fail"), wait_s=5))
    follower = asyncio.create_task(cache.once("x", lambda: slow("own"), wait_s=5))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RuntimeError):
        await leader
    assert await follower == ("own", "miss")  # ran its own instead of failing with the leader


async def test_content_keys_tell_bytes_from_pixels_and_shapes() -> None:
    pixels = np.zeros((3, 2, 2), dtype=np.float32)
    keys = {
        await content_key(b"abc", None),
        await content_key(b"abd", None),
        await content_key(None, pixels),
        await content_key(None, pixels.reshape(3, 4, 1)),
        await content_key(pixels.tobytes(), None),
    }
    assert len(keys) == 5 and await content_key(b"abc", None) == await content_key(b"abc", None)
