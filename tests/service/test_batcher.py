"""The batcher's invariants, with a plain function as the model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from vitserve.service.batching.batcher import Batcher
from vitserve.service.http.errors import DeadlineExceeded, Overloaded, ShuttingDown

pytestmark = pytest.mark.anyio


class Recorder:
    """A batch function that returns each row's own value times 10 and records batch sizes and threads."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.seen: list[list[float]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        self.seen.append([float(v) for v in x[:, 0]])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return x * 10


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_concurrent_callers_share_a_batch_and_get_their_own_rows() -> None:
    fn = Recorder()
    batcher = Batcher(fn, max_batch_size=8, max_delay_ms=200, queue_size=16)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(np.array([float(i)]), deadline=later()) for i in range(8)))
    await batcher.stop()
    assert fn.sizes == [8]  # full at 8: closed before the 200 ms delay
    assert [float(r.row[0]) for r in results] == [i * 10.0 for i in range(8)]
    assert all(r.batch_size == 8 for r in results)
    assert fn.threads and threading.main_thread().name not in fn.threads


async def test_batch_closes_after_max_delay_with_what_it_has() -> None:
    fn = Recorder()
    batcher = Batcher(fn, max_batch_size=8, max_delay_ms=30, queue_size=16)
    batcher.start()
    started = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(np.array([float(i)]), deadline=later()) for i in range(3)))
    waited = time.monotonic() - started
    await batcher.stop()
    assert fn.sizes == [3]
    assert waited >= 0.03
    assert [r.batch_size for r in results] == [3, 3, 3]


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works() -> None:
    calls = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    batcher = Batcher(fn, max_batch_size=4, max_delay_ms=50, queue_size=8)
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(np.array([1.0]), deadline=later()) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) and str(o) == "boom" for o in outcomes)
    again = await batcher.submit(np.array([2.0]), deadline=later())
    await batcher.stop()
    assert float(again.row[0]) == 2.0


async def test_wrong_output_rows_is_an_error_not_a_misattribution() -> None:
    batcher = Batcher(lambda x: x[:1], max_batch_size=4, max_delay_ms=50, queue_size=8)
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(np.array([float(i)]), deadline=later()) for i in range(2)), return_exceptions=True
    )
    await batcher.stop()
    assert all(isinstance(o, RuntimeError) and "for a batch of 2" in str(o) for o in outcomes)


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    fn = Recorder(delay_s=0.2)
    batcher = Batcher(fn, max_batch_size=1, max_delay_ms=0, queue_size=2)
    batcher.start()
    first = asyncio.create_task(batcher.submit(np.array([0.0]), deadline=later()))
    await asyncio.sleep(0.05)  # the first item is running; the queue is empty again
    waiting = [asyncio.create_task(batcher.submit(np.array([float(i)]), deadline=later())) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await batcher.submit(np.array([3.0]), deadline=later())
    assert int(info.value.headers()["Retry-After"]) >= 1
    assert [float(r.row[0]) for r in await asyncio.gather(first, *waiting)] == [0.0, 10.0, 20.0]
    await batcher.stop()


async def test_expired_items_are_dropped_before_taking_a_slot() -> None:
    fn = Recorder(delay_s=0.15)
    batcher = Batcher(fn, max_batch_size=4, max_delay_ms=0, queue_size=8)
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(np.array([0.0]), deadline=later()))
    await asyncio.sleep(0.02)  # the blocker's batch is running for 150 ms
    short = asyncio.create_task(batcher.submit(np.array([7.0]), deadline=later(0.05)))
    kept = asyncio.create_task(batcher.submit(np.array([8.0]), deadline=later()))
    with pytest.raises(DeadlineExceeded):
        await short
    await blocker
    assert float((await kept).row[0]) == 80.0
    await batcher.stop()
    assert [7.0] not in fn.seen and all(7.0 not in batch for batch in fn.seen)


async def test_a_deadline_already_past_is_refused_at_once() -> None:
    batcher = Batcher(Recorder(), max_batch_size=2, max_delay_ms=0, queue_size=2)
    batcher.start()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(np.array([1.0]), deadline=time.monotonic() - 1)
    await batcher.stop()


async def test_stop_drains_queued_work_then_refuses() -> None:
    fn = Recorder(delay_s=0.05)
    batcher = Batcher(fn, max_batch_size=2, max_delay_ms=0, queue_size=8)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(np.array([float(i)]), deadline=later())) for i in range(5)]
    await asyncio.sleep(0.01)
    await batcher.stop(drain=True, timeout_s=5)
    assert sorted(float(t.result().row[0]) for t in tasks) == [0.0, 10.0, 20.0, 30.0, 40.0]
    with pytest.raises(ShuttingDown):
        await batcher.submit(np.array([1.0]), deadline=later())


async def test_stop_without_drain_fails_what_is_left() -> None:
    fn = Recorder(delay_s=0.1)
    batcher = Batcher(fn, max_batch_size=1, max_delay_ms=0, queue_size=8)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(np.array([float(i)]), deadline=later())) for i in range(3)]
    await asyncio.sleep(0.02)
    await batcher.stop(drain=False)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert any(isinstance(o, ShuttingDown) for o in outcomes)
    assert all(isinstance(o, ShuttingDown) or float(o.row[0]) % 10 == 0 for o in outcomes)  # type: ignore[union-attr]


async def test_an_observer_bug_does_not_stop_the_loop() -> None:
    class Broken:
        def on_batch(self, size: int, queue_waits_s: object, run_s: float) -> None:
            raise RuntimeError("observer bug")

        def on_reject(self, reason: str) -> None: ...

        def on_depth(self, depth: int) -> None: ...

    batcher = Batcher(Recorder(), max_batch_size=1, max_delay_ms=0, queue_size=4, observer=Broken())
    batcher.start()
    first = await batcher.submit(np.array([1.0]), deadline=later())
    second = await batcher.submit(np.array([2.0]), deadline=later(2))
    await batcher.stop()
    assert (float(first.row[0]), float(second.row[0])) == (10.0, 20.0)
