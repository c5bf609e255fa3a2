"""Which model's batch runs next on the one device, and how big it may be: weighted fair queuing over the models
with a batch waiting.

Every loaded version has its own batcher and bounded queue; all their batches run on one device thread. Left to
the thread's queue, the order would be first come first served, and a model whose clients send the most would
take the device in proportion to its traffic while a quieter model's requests waited behind its batches. So a
batcher takes a turn (``turn``) before it forms its batch, and one batch runs at a time.

The order is self-clocked fair queuing (Golestani 1994): each model (a key: the model's name, so a canary and its
stable version share one share) has a weight (default 1). A turn asked for with an estimated cost (the batch's
rows × the model's recent seconds per row) gets a start tag ``S = max(V, F[key])`` and a finish tag
``F = S + cost ÷ weight``; the waiting turn with the smallest finish tag goes next, V becomes its finish tag, and
when the batch returns ``F[key]`` is set from the device seconds it really took. A model that has had more than
its share waits behind those that have not; one back from idleness starts at V, with no credit banked for the
time it was idle; and a model with a higher weight gets both more of the device and shorter waits.

A batch cannot be interrupted, and a request of one model that arrives while another model's batch runs waits for
it. So while other models are active (waiting, running, or served lately: ``ACTIVE_S``) a batch takes at
most its model's weighted share of the largest batch against the heaviest of them (``cap``: with equal weights,
half of it; a model of weight 1 beside one of weight 4, a fifth): a model whose waiters all arrive at once (a
version just loaded on demand) drains them over several short turns instead of holding the device for one long
batch, which bounds what a heavier model's requests wait behind. That costs batching (more, smaller batches) only
while several models are active. A model alone takes every turn at once, at full batch size: without contention the
scheduler costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

# A model counts as active (``cap``) for this long after its last batch (or four batches' time, if longer): longer
# than the gaps between the batches of a model with steady traffic, so that a busy model is protected between its
# requests, not only while one waits.
ACTIVE_S = 0.25


@dataclass(order=True)
class _Turn:
    finish: float
    order: int  # ties go to whoever asked first
    start: float = field(compare=False)
    key: str = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False, repr=False)


class DeviceScheduler:
    """One batch at a time on the device, the next turn to the waiting model with the smallest finish tag, each
    batch under contention at most its model's share (above). Event-loop side only."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        active_s: float = ACTIVE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.weights = dict(weights or {})
        self.active_s = active_s
        self._clock = clock
        self._ended: dict[str, float] = {}  # key → when its last batch returned (monotonic)
        self._batch_s = 0.0  # moving average of a batch's device time, all models
        self._running: _Turn | None = None  # the turn whose batch has the device
        self._v = 0.0  # virtual time: the finish tag of the turn that last got the device
        self._finish: dict[str, float] = {}  # key → finish tag of its latest turn
        self._waiting: list[_Turn] = []
        self._order = itertools.count()
        self.device_s: defaultdict[str, float] = defaultdict(float)  # device seconds per key, for tests and stats

    def weight(self, key: str) -> float:
        return self.weights.get(key, 1.0)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def active(self) -> set[str]:
        """The models waiting for a turn, running one, or that ran one lately: within ``active_s``, or four
        batches' time when batches take longer (a big model's requests come further apart)."""
        horizon = self._clock() - max(self.active_s, 4 * self._batch_s)
        recent = {key for key, ended in self._ended.items() if ended >= horizon}
        running = {self._running.key} if self._running is not None else set()
        return recent | running | {turn.key for turn in self._waiting}

    def cap(self, key: str, size: int) -> int:
        """The rows a batch of ``key``'s may take now: ``size`` while no other model is active, else its weighted
        share of ``size`` against the heaviest other active model (at least one row)."""
        others = self.active() - {key}
        if not others:
            return size
        mine = self.weight(key)
        return max(1, int(size * mine / (mine + max(self.weight(k) for k in others))))

    @contextlib.asynccontextmanager
    async def turn(self, key: str, *, cost_s: float = 0.0) -> AsyncIterator[None]:
        """The device, for one batch of ``key``'s estimated to take ``cost_s``, for the duration of the block."""
        turn = await self._acquire(key, cost_s)
        started = self._clock()
        try:
            yield
        finally:
            self._release(turn, self._clock() - started)

    async def _acquire(self, key: str, cost_s: float) -> _Turn:
        start = max(self._v, self._finish.get(key, 0.0))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn = _Turn(start + cost_s / self.weight(key), next(self._order), start, key, future)
        self._finish[key] = turn.finish
        if self._running is None and not self._waiting:
            self._grant(turn)
            return turn
        self._waiting.append(turn)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled: hand the device on
                self._release(turn, 0.0)
            elif turn in self._waiting:
                self._waiting.remove(turn)
            raise
        return turn

    def _grant(self, turn: _Turn) -> None:
        self._running = turn
        self._v = max(self._v, turn.finish)
        if not turn.granted.done():
            turn.granted.set_result(None)

    def _release(self, turn: _Turn, run_s: float) -> None:
        if self._finish.get(turn.key) == turn.finish:  # its latest turn: the real cost replaces the estimate
            self._finish[turn.key] = turn.start + run_s / self.weight(turn.key)
        self.device_s[turn.key] += run_s
        self._batch_s = run_s if not self._batch_s else 0.9 * self._batch_s + 0.1 * run_s
        self._ended[turn.key] = self._clock()
        self._running = None
        self._waiting = [t for t in self._waiting if not t.granted.done()]  # waiters cancelled meanwhile
        if self._waiting:
            best = min(self._waiting)
            self._waiting.remove(best)
            self._grant(best)
        else:
            # Finish tags at or behind V say nothing (a key would start at V anyway): the table keeps only the
            # models that used the device lately.
            self._finish = {k: f for k, f in self._finish.items() if f > self._v}
            horizon = self._clock() - max(self.active_s, 4 * self._batch_s)
            self._ended = {k: t for k, t in self._ended.items() if t >= horizon}
