"""The device scheduler: one batch at a time, turns by weighted fair queuing, batches capped while other models are
active; and batchers sharing it. On a hand-driven clock, no real device."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from tests.service.fakes import Clock
from vitserve.service.batching.batcher import Batcher
from vitserve.service.batching.scheduler import DeviceScheduler

pytestmark = pytest.mark.anyio


async def take_turns(scheduler: DeviceScheduler, clock: Clock, asks: list[tuple[str, float]]) -> list[str]:
    """Every (key, seconds) asks for a turn while a first batch holds the device; the order they are granted in.
    Each granted batch advances the clock by its seconds."""
    order: list[str] = []
    blocker = scheduler.turn("blocker")
    await blocker.__aenter__()

    async def one(key: str, run_s: float) -> None:
        async with scheduler.turn(key, cost_s=run_s):
            order.append(key)
            clock.now += run_s

    tasks = [asyncio.create_task(one(key, run_s)) for key, run_s in asks]
    await asyncio.sleep(0)  # every task asks for its turn
    assert scheduler.waiting == len(asks)
    await blocker.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    return order


async def test_a_model_alone_is_granted_at_once_and_takes_full_batches() -> None:
    scheduler = DeviceScheduler()
    async with scheduler.turn("a", cost_s=1.0):
        assert scheduler.waiting == 0 and scheduler.cap("a", 8) == 8


async def test_a_model_with_many_batches_waiting_takes_turns_with_one_that_asked_after_them() -> None:
    clock = Clock()
    scheduler = DeviceScheduler(clock=clock)
    order = await take_turns(scheduler, clock, [("hot", 0.01)] * 3 + [("cold", 0.01)])
    assert order == ["hot", "cold", "hot", "hot"]  # first come, first served would run every hot batch first


async def test_weights_share_the_device_in_proportion() -> None:
    clock = Clock()
    scheduler = DeviceScheduler({"heavy": 3.0}, clock=clock)
    order = await take_turns(scheduler, clock, [("heavy", 0.01)] * 30 + [("light", 0.01)] * 30)
    first_twenty = order[:20]
    assert first_twenty.count("heavy") == 15 and first_twenty.count("light") == 5  # 3 : 1


async def test_batches_are_capped_at_the_models_share_while_others_are_active() -> None:
    clock = Clock()
    scheduler = DeviceScheduler({"hot": 4.0}, clock=clock, active_s=0.25)
    async with scheduler.turn("hot"):
        clock.now += 0.01
    assert scheduler.cap("cold", 8) == 1 and scheduler.cap("hot", 8) == 8  # hot is the only active model
    async with scheduler.turn("cold"):
        clock.now += 0.01
    assert scheduler.cap("hot", 8) == 6 and scheduler.cap("other", 8) == 1  # 4 / (4 + 1); 1 / (1 + 4)
    clock.now += 1.0  # both idle for longer than active_s
    assert scheduler.cap("cold", 8) == 8


async def test_a_waiter_that_goes_away_does_not_hold_up_the_others() -> None:
    scheduler = DeviceScheduler()
    blocker = scheduler.turn("a")
    await blocker.__aenter__()
    gone = asyncio.create_task(scheduler.turn("b").__aenter__())
    ran: list[str] = []

    async def waits() -> None:
        async with scheduler.turn("c"):
            ran.append("c")

    stays = asyncio.create_task(waits())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    await blocker.__aexit__(None, None, None)
    await asyncio.wait_for(stays, 1.0)
    assert ran == ["c"] and scheduler.waiting == 0


async def test_batchers_sharing_a_scheduler_interleave_and_a_busy_one_cannot_hold_the_device() -> None:
    """A model with a full queue and one with a single item: the single item runs after at most one batch of the
    busy model's, and that batch is capped at the busy model's share."""
    runs: list[tuple[str, int]] = []

    def model(name: str) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            runs.append((name, len(x)))
            return x

        return run

    scheduler = DeviceScheduler()
    busy = Batcher(model("busy"), max_batch_size=8, max_delay_ms=0, queue_size=64, scheduler=scheduler, share="busy")
    quiet = Batcher(model("quiet"), max_batch_size=8, max_delay_ms=0, queue_size=8, scheduler=scheduler, share="quiet")
    busy.start()
    quiet.start()
    deadline = time.monotonic() + 10
    try:
        holder = scheduler.turn("elsewhere")  # the device is busy while the queues fill
        await holder.__aenter__()
        waiting = [asyncio.create_task(busy.submit(np.array([i]), deadline=deadline)) for i in range(32)]
        await asyncio.sleep(0.01)
        waiting.append(asyncio.create_task(quiet.submit(np.array([99]), deadline=deadline)))
        await asyncio.sleep(0.01)
        await holder.__aexit__(None, None, None)
        await asyncio.gather(*waiting)
    finally:
        await busy.stop()
        await quiet.stop()
    assert runs.index(("quiet", 1)) <= 1
    assert max(size for name, size in runs[:3] if name == "busy") <= 4  # half of 8: two models of weight 1
