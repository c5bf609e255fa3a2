"""Dynamic batching: many concurrent callers, one model call per batch, each caller gets exactly its own row.

Model-agnostic (it stacks ``(...)``-shaped items into ``(B, ...)`` and hands that to a function), in the manner
of ray serve's ``_BatchQueue``. Invariants, all on the monotonic clock:

- the queue is bounded: a full queue is ``Overloaded`` at once (503 + Retry-After), never an unbounded wait;
- an idle engine never waits for company: a batch is whatever is queued when the engine is free (up to
  ``max_batch_size``), so one client pays no batching delay, and under load the batch grows while the engine
  runs the previous one. ``max_delay_ms`` (0 by default) lets a batch that is not full wait up to that long
  after its first item arrived, for deployments that prefer fuller batches to latency, but only while some
  item is on its way (announced with ``incoming()`` while its image decodes): with none coming, waiting could
  only add latency, so a lone client pays nothing for it whatever its value;
- an item whose deadline has passed (or whose caller went away) is dropped before it takes a batch slot, and
  its caller is told at once (``DeadlineExceeded``);
- the function runs on one worker thread, off the event loop; every caller of a batch gets its own row of the
  output, or the batch's exception; an output whose first dimension is not the batch size is an error;
- with a ``DeviceScheduler`` (``service.batching.scheduler``), several batchers share the worker thread fairly: a
  batch is formed once its model has its turn on the device (so it takes what queued while it waited), and while
  other models wait it takes at most its model's share of ``max_batch_size`` and does not wait for company.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vitserve.service.batching.scheduler import DeviceScheduler
from vitserve.service.core.errors import DeadlineExceeded, Overloaded, ShuttingDown

log = logging.getLogger(__name__)

BatchFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BatchResult:
    """One caller's share of a batch: ``row`` is ``output[i]`` for its item."""

    row: np.ndarray
    queue_ms: float  # from submit to the batch's start
    infer_ms: float  # the batch's model call
    batch_size: int


class BatchObserver(Protocol):
    """Receives what the batcher measures (the service turns it into Prometheus metrics)."""

    def on_batch(self, size: int, queue_waits_s: Sequence[float], run_s: float) -> None: ...
    def on_reject(self, reason: str) -> None: ...
    def on_depth(self, depth: int) -> None: ...


@dataclass(eq=False)
class _Item:
    x: np.ndarray
    deadline: float
    enqueued: float
    future: asyncio.Future[BatchResult] = field(repr=False)

    def live(self, now: float) -> bool:
        return not self.future.done() and now < self.deadline


class Batcher:
    """A bounded queue in front of ``fn((B, ...)) -> (B, ...)``; ``start`` and ``stop`` from the owner's lifespan."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        queue_size: int,
        executor: ThreadPoolExecutor | None = None,
        observer: BatchObserver | None = None,
        name: str = "batcher",
        clock: Callable[[], float] = time.monotonic,
        scheduler: DeviceScheduler | None = None,
        share: str = "",
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_delay_ms < 0:
            raise ValueError(f"invalid batcher: max_batch_size {max_batch_size}, queue_size {queue_size}")
        self.fn, self.name = fn, name
        self._clock = clock  # deadlines are instants on this clock (``time.monotonic`` in the service)
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_ms / 1000.0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._observer = observer
        self._scheduler, self._share = scheduler, share or name  # the device's turns, and whose share this is
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = False
        self._incoming = 0  # items being prepared for this batcher (see ``incoming``)
        self._batch_s = 0.0  # moving average of one model call, for Retry-After
        self._row_s = 0.0  # moving average of a model call's seconds per row, for the scheduler's estimate
        self._hand: list[_Item] = []  # taken from the queue and not yet answered (failed if the loop stops)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce an item on its way (its image decoding) for the duration: a batch that is not full waits up
        to ``max_delay_ms`` for company only while some item is announced. Event-loop side only."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def submit(self, x: np.ndarray, *, deadline: float) -> BatchResult:
        """Queue one item and wait for its row. ``deadline`` is an instant on the batcher's clock.

        Raises ``Overloaded`` (queue full), ``DeadlineExceeded``, ``ShuttingDown`` or the batch's exception.
        """
        if self._closing or self._task is None:
            raise ShuttingDown(f"{self.name} is not accepting work")
        now = self._clock()
        if now >= deadline:
            self._reject("deadline")
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        item = _Item(x, deadline, now, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._reject("queue_full")
            raise Overloaded(
                f"{self.name}: queue full ({self._queue.maxsize} waiting); retry later",
                retry_after_s=self._retry_after_s(),
            ) from None
        self._depth_changed()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), deadline - now)
        except TimeoutError:
            self._reject("deadline")
            raise DeadlineExceeded(f"no result within the request's deadline ({deadline - now:.3f} s)") from None
        finally:
            item.future.cancel()  # no-op when done; otherwise the loop skips the abandoned item

    async def stop(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Refuse new items; with ``drain``, finish the queued ones (up to ``timeout_s``); fail the rest."""
        self._closing = True
        if drain and self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            self._fail([self._queue.get_nowait()], ShuttingDown(f"{self.name} stopped before this item ran"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def _idle(self) -> None:
        while self._queue.qsize() or self._running:
            await asyncio.sleep(0.01)

    async def _loop(self) -> None:
        while True:
            try:
                first = await self._queue.get()
                self._running = True  # from here until the batch is answered, stop(drain) waits for us
                self._hand = [first]
                async with self._turn():  # with a scheduler: this model's turn on the device
                    batch = await self._collect(first)
                    if batch:
                        await self._run(batch)
            except asyncio.CancelledError:
                self._fail(self._hand, ShuttingDown(f"{self.name} stopped before this item ran"))
                raise
            except Exception:  # a bug here must not leave every later caller waiting for its deadline
                log.exception("%s: batching loop error; continuing", self.name)
                self._running = False

    async def _collect(self, first: _Item) -> list[_Item]:
        """From a first item, take more until the batch is full (or, under a scheduler, holds this model's share
        of ``max_batch_size`` while other models wait) or its delay is over; the delay is not waited while other
        models wait for the device."""
        limit, contended = self.max_batch_size, False
        if self._scheduler is not None:
            limit, contended = self._scheduler.cap(self._share, self.max_batch_size), self._scheduler.waiting > 0
        batch = self._keep_live([first])
        close_at = first.enqueued + self.max_delay_s
        while len(batch) < limit:
            try:
                item = self._queue.get_nowait()  # what queued while the engine ran: no waiting for it
            except asyncio.QueueEmpty:
                remaining = close_at - self._clock()
                if remaining <= 0 or not self._incoming or contended:  # nothing (more) worth waiting for
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            self._hand.append(item)
            batch += self._keep_live([item])
        self._depth_changed()
        live = self._keep_live(batch)  # re-checked: the wait may have outlived some
        if not live:
            self._running = False
        return live

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self._scheduler is None:
            return contextlib.nullcontext()
        rows = min(self.max_batch_size, 1 + self._queue.qsize())
        return self._scheduler.turn(self._share, cost_s=rows * self._row_s)

    def _keep_live(self, items: list[_Item]) -> list[_Item]:
        """The items still wanted; an expired one is failed now rather than left to its caller's timer."""
        now = self._clock()
        expired = [item for item in items if not item.future.done() and now >= item.deadline]
        if expired:
            self._fail(expired, DeadlineExceeded("the request's deadline passed while it was queued"))
            for _ in expired:
                self._reject("deadline")
        return [item for item in items if item.live(now)]

    async def _run(self, batch: list[_Item]) -> None:
        started = self._clock()
        try:
            x = np.stack([item.x for item in batch])
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, x)
            if not isinstance(out, np.ndarray) or out.ndim < 1 or out.shape[0] != len(batch):
                shape = getattr(out, "shape", type(out).__name__)
                raise RuntimeError(f"{self.name}: batch function returned {shape} for a batch of {len(batch)}")
        except asyncio.CancelledError:
            self._fail(batch, ShuttingDown(f"{self.name} stopped while this batch ran"))
            raise
        except Exception as err:
            log.warning("%s: batch of %d failed: %s", self.name, len(batch), err)
            self._fail(batch, err)
            return
        finally:
            self._running = False
        run_s = self._clock() - started
        self._batch_s = run_s if not self._batch_s else 0.8 * self._batch_s + 0.2 * run_s
        row_s = run_s / len(batch)
        self._row_s = row_s if not self._row_s else 0.8 * self._row_s + 0.2 * row_s
        for i, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(BatchResult(out[i], (started - item.enqueued) * 1e3, run_s * 1e3, len(batch)))
        if self._observer is not None:
            self._observer.on_batch(len(batch), [started - item.enqueued for item in batch], run_s)

    def _fail(self, items: list[_Item], err: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(err)

    def _retry_after_s(self) -> float:
        batches_ahead = math.ceil(self._queue.qsize() / self.max_batch_size)
        return max(1.0, batches_ahead * self._batch_s)

    def _reject(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.on_reject(reason)

    def _depth_changed(self) -> None:
        if self._observer is not None:
            self._observer.on_depth(self._queue.qsize())
