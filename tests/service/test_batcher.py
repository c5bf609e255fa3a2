"""The batcher's invariants, with a plain function as the model: no real sleeps.

The model function is gated: it blocks its worker thread until the test opens the gate, so "the engine is
busy" is a state the test holds, not a guess at timing. Deadlines run on a hand-driven clock.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tests.service.fakes import Clock
from vitserve.service.batching.batcher import Batcher
from vitserve.service.core.errors import DeadlineExceeded, Overloaded, ShuttingDown

pytestmark = pytest.mark.anyio

WAIT_S = 10.0  # bound on every wait for the worker thread; reached only when the batcher is broken


class Gated:
    """A batch function returning each row times 10 that records batch sizes, rows and threads, and that
    (when ``gated``) blocks each call until ``release()``."""

    def __init__(self, *, gated: bool = False) -> None:
        self.sizes: list[int] = []
        self.seen: list[list[float]] = []
        self.threads: set[str] = set()
        self._gate = threading.Semaphore(0)
        self._gated = gated
        self._entered = threading.Semaphore(0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        self.seen.append([float(v) for v in x[:, 0]])
        self.threads.add(threading.current_thread().name)
        self._entered.release()
        if self._gated and not self._gate.acquire(timeout=WAIT_S):
            raise RuntimeError("the test never released the batch")
        return x * 10

    async def running(self) -> None:
        """Wait until a call has entered the function (the engine is busy)."""
        assert await asyncio.to_thread(self._entered.acquire, True, WAIT_S), "no batch started"

    def release(self, calls: int = 1) -> None:
        for _ in range(calls):
            self._gate.release()


def item(value: float) -> np.ndarray:
    return np.array([value])


async def settle(batcher: Batcher, depth: int) -> None:
    """Let the event loop run until ``depth`` items are queued (bounded: no timing assumptions)."""
    for _ in range(1000):
        if batcher.depth == depth:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"queue depth {batcher.depth}, expected {depth}")


@pytest.mark.parametrize("max_delay_ms", [0, 60_000])
async def test_an_idle_engine_runs_a_lone_request_at_once_even_with_a_long_max_delay(max_delay_ms: float) -> None:
    clock, fn = Clock(), Gated()
    # Nothing else is on its way, so even a minute's max_delay_ms (the default is 0) must not hold it back.
    batcher = Batcher(fn, max_batch_size=8, max_delay_ms=max_delay_ms, queue_size=8, clock=clock)
    batcher.start()
    result = await asyncio.wait_for(batcher.submit(item(3), deadline=clock() + 5), WAIT_S)
    await batcher.stop()
    assert fn.sizes == [1] and float(result.row[0]) == 30.0 and result.batch_size == 1


async def test_with_a_max_delay_a_batch_waits_for_an_item_on_its_way_and_only_then() -> None:
    clock, fn = Clock(), Gated()
    batcher = Batcher(fn, max_batch_size=8, max_delay_ms=60_000, queue_size=8, clock=clock)
    batcher.start()
    with batcher.incoming():  # a second request is still decoding its image
        first = asyncio.create_task(batcher.submit(item(1), deadline=clock() + 3600))
        await settle(batcher, 0)  # the batcher took the first item ...
        for _ in range(100):
            await asyncio.sleep(0)
        assert fn.sizes == []  # ... and waits for the one on its way
    second = asyncio.create_task(batcher.submit(item(2), deadline=clock() + 3600))
    results = await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    assert fn.sizes == [2] and [r.batch_size for r in results] == [2, 2]
    with batcher.incoming():  # announced, then gone without an item (its decode failed): no minute's wait
        pass
    lone = await asyncio.wait_for(batcher.submit(item(3), deadline=clock() + 3600), WAIT_S)
    await batcher.stop()
    assert fn.sizes == [2, 1] and lone.batch_size == 1


async def test_the_batch_grows_while_the_engine_is_busy_and_each_caller_gets_its_own_row() -> None:
    clock, fn = Clock(), Gated(gated=True)
    batcher = Batcher(fn, max_batch_size=8, max_delay_ms=0, queue_size=16, clock=clock)
    batcher.start()
    first = asyncio.create_task(batcher.submit(item(0), deadline=clock() + 5))
    await fn.running()  # the engine is busy with the lone first request
    rest = [asyncio.create_task(batcher.submit(item(i), deadline=clock() + 5)) for i in range(1, 11)]
    await settle(batcher, 10)
    fn.release(3)
    results = await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_S)
    await batcher.stop()
    assert fn.sizes == [1, 8, 2]  # what queued meanwhile, up to max_batch_size, then the remainder
    assert [float(r.row[0]) for r in results] == [i * 10.0 for i in range(11)]
    assert [r.batch_size for r in results] == [1] + [8] * 8 + [2] * 2
    assert fn.threads and threading.main_thread().name not in fn.threads


async def test_a_positive_max_delay_still_closes_a_full_batch_at_once() -> None:
    clock, fn = Clock(), Gated()
    batcher = Batcher(fn, max_batch_size=4, max_delay_ms=60_000, queue_size=8, clock=clock)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(item(i), deadline=clock() + 3600)) for i in range(4)]
    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)  # full at 4: no need to wait the minute
    await batcher.stop()
    assert fn.sizes == [4] and [r.batch_size for r in results] == [4] * 4


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works() -> None:
    calls = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    clock = Clock()
    batcher = Batcher(fn, max_batch_size=4, max_delay_ms=60_000, queue_size=8, clock=clock)
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(item(1), deadline=clock() + 5) for _ in range(4)), return_exceptions=True
    )
    assert calls == [4] and all(isinstance(o, RuntimeError) and str(o) == "boom" for o in outcomes)
    again = await asyncio.wait_for(batcher.submit(item(2), deadline=clock() + 5), WAIT_S)
    await batcher.stop()
    assert float(again.row[0]) == 2.0


async def test_wrong_output_rows_is_an_error_not_a_misattribution() -> None:
    clock = Clock()
    batcher = Batcher(lambda x: x[:1], max_batch_size=2, max_delay_ms=60_000, queue_size=8, clock=clock)
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(item(i), deadline=clock() + 5) for i in range(2)), return_exceptions=True
    )
    await batcher.stop()
    assert all(isinstance(o, RuntimeError) and "for a batch of 2" in str(o) for o in outcomes)


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    clock, fn = Clock(), Gated(gated=True)
    batcher = Batcher(fn, max_batch_size=1, max_delay_ms=0, queue_size=2, clock=clock)
    batcher.start()
    first = asyncio.create_task(batcher.submit(item(0), deadline=clock() + 5))
    await fn.running()  # the first item is running; the queue is empty again
    waiting = [asyncio.create_task(batcher.submit(item(i), deadline=clock() + 5)) for i in (1, 2)]
    await settle(batcher, 2)
    with pytest.raises(Overloaded) as info:
        await batcher.submit(item(3), deadline=clock() + 5)
    assert int(info.value.headers()["Retry-After"]) >= 1
    fn.release(3)
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT_S)
    await batcher.stop()
    assert [float(r.row[0]) for r in results] == [0.0, 10.0, 20.0]
    assert fn.sizes == [1, 1, 1]


async def test_expired_items_are_dropped_before_taking_a_slot_and_told_at_once() -> None:
    clock, fn = Clock(), Gated(gated=True)
    batcher = Batcher(fn, max_batch_size=2, max_delay_ms=0, queue_size=8, clock=clock)
    batcher.start()
    blocker = asyncio.create_task(batcher.submit(item(0), deadline=clock() + 5))
    await fn.running()
    # The short item's real-time timer (its deadline - now, on the fake clock) is an hour: only the batcher's
    # own check can fail it within this test.
    short = asyncio.create_task(batcher.submit(item(7), deadline=clock() + 3600))
    kept = [asyncio.create_task(batcher.submit(item(v), deadline=clock() + 7200)) for v in (8, 9)]
    await settle(batcher, 3)
    clock.now += 3601  # the short item's deadline passes while the engine is busy
    fn.release(2)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(short, WAIT_S)
    results = await asyncio.wait_for(asyncio.gather(blocker, *kept), WAIT_S)
    await batcher.stop()
    assert [float(r.row[0]) for r in results] == [0.0, 80.0, 90.0]
    assert fn.sizes == [1, 2] and all(7.0 not in rows for rows in fn.seen)  # its slot went to 9


async def test_a_deadline_already_past_is_refused_at_once() -> None:
    clock = Clock()
    batcher = Batcher(Gated(), max_batch_size=2, max_delay_ms=0, queue_size=2, clock=clock)
    batcher.start()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(item(1), deadline=clock() - 1)
    await batcher.stop()


async def test_stop_drains_queued_work_then_refuses() -> None:
    clock, fn = Clock(), Gated(gated=True)
    batcher = Batcher(fn, max_batch_size=2, max_delay_ms=0, queue_size=8, clock=clock)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(item(i), deadline=clock() + 5)) for i in range(5)]
    await fn.running()
    fn.release(3)  # 1 + 2 + 2 items
    await asyncio.wait_for(batcher.stop(drain=True, timeout_s=WAIT_S), WAIT_S)
    assert sorted(float(t.result().row[0]) for t in tasks) == [0.0, 10.0, 20.0, 30.0, 40.0]
    with pytest.raises(ShuttingDown):
        await batcher.submit(item(1), deadline=clock() + 5)


async def test_stop_without_drain_fails_what_is_left() -> None:
    clock, fn = Clock(), Gated(gated=True)
    batcher = Batcher(fn, max_batch_size=1, max_delay_ms=0, queue_size=8, clock=clock)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(item(i), deadline=clock() + 5)) for i in range(3)]
    await fn.running()
    await settle(batcher, 2)
    await batcher.stop(drain=False)
    fn.release(3)  # let the abandoned worker call return
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    assert all(isinstance(o, ShuttingDown) for o in outcomes)  # the running batch and the two queued
    assert fn.sizes == [1]


async def test_an_observer_bug_does_not_stop_the_loop() -> None:
    class Broken:
        def on_batch(self, size: int, queue_waits_s: object, run_s: float) -> None:
            raise RuntimeError("observer bug")

        def on_reject(self, reason: str) -> None: ...

        def on_depth(self, depth: int) -> None: ...

    clock = Clock()
    batcher = Batcher(Gated(), max_batch_size=1, max_delay_ms=0, queue_size=4, observer=Broken(), clock=clock)
    batcher.start()
    first = await asyncio.wait_for(batcher.submit(item(1), deadline=clock() + 5), WAIT_S)
    second = await asyncio.wait_for(batcher.submit(item(2), deadline=clock() + 2), WAIT_S)
    await batcher.stop()
    assert (float(first.row[0]), float(second.row[0])) == (10.0, 20.0)
