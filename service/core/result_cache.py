"""The duplicate-image cache of one version, for models that opt in (``RESULT_CACHE_MODELS``): identical images
answered from a bounded, content-addressed cache of results, and identical images in flight sharing one inference.

Content-addressed: the key is the SHA-256 of the image's encoded bytes (or, for a client that sends preprocessed
pixels, of the pixels with their shape and dtype). A cache belongs to one loaded version, whose card fixes its
preprocessing, so the same bytes for the same version and preprocessing are the same key, and nothing else is.
Bounded: at most ``entries`` results (one ``(C,)`` logits row each), the least recently used dropped first; it
goes with its version when the version unloads.

In flight: the first request for a key runs (decode, queue, infer) and the others with the same key wait for its
result instead of running their own; a follower never inherits the leader's failure (the leader's deadline, or
its request failing on another image): it then runs its own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, TypeVar

import numpy as np

V = TypeVar("V")
Outcome = Literal["hit", "shared", "miss"]

_HASH_ON_LOOP_BYTES = 1024 * 1024  # bigger inputs are hashed on a thread (≈ 1 ms per MB), off the event loop


async def content_key(data: bytes | None, pixels: np.ndarray | None) -> str:
    """The cache key of an image: ``b:`` + SHA-256 of its bytes, or ``p:`` + SHA-256 of its pixels' shape, dtype
    and values."""
    if pixels is not None:
        array = np.ascontiguousarray(pixels)
        head = f"{array.shape}{array.dtype.str}".encode()
        return "p:" + await _sha256(head + array.tobytes())
    return "b:" + await _sha256(data or b"")


async def _sha256(payload: bytes) -> str:
    if len(payload) <= _HASH_ON_LOOP_BYTES:
        return hashlib.sha256(payload).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(payload).hexdigest())  # hashlib releases the GIL


class _LeaderFailed(Exception):
    """What followers see when the request they waited on did not produce a result: they run their own."""


class ResultCache(Generic[V]):
    """Up to ``entries`` results by key, and the computations in flight (see the module docstring). Event-loop
    side only."""

    def __init__(self, entries: int) -> None:
        if entries < 1:
            raise ValueError(f"a result cache needs at least one entry, got {entries}")
        self.entries = entries
        self._results: OrderedDict[str, V] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[V]] = {}
        self.counts: dict[Outcome, int] = {"hit": 0, "shared": 0, "miss": 0}

    def __len__(self) -> int:
        return len(self._results)

    @property
    def hit_rate(self) -> float | None:
        total = sum(self.counts.values())
        return (self.counts["hit"] + self.counts["shared"]) / total if total else None

    async def once(self, key: str, compute: Callable[[], Awaitable[V]], *, wait_s: float) -> tuple[V, Outcome]:
        """``key``'s result: from the cache (``hit``), from an identical computation in flight (``shared``, waiting
        at most ``wait_s``: ``TimeoutError`` beyond), or from ``compute()`` (``miss``), which is then kept."""
        if key in self._results:
            self._results.move_to_end(key)
            return self._count(self._results[key], "hit")
        leader = self._in_flight.get(key)
        if leader is not None:
            try:
                return self._count(await asyncio.wait_for(asyncio.shield(leader), max(0.0, wait_s)), "shared")
            except _LeaderFailed:
                pass  # run our own, below (not shared: the next identical request finds the cache or leads)
            return self._count(await compute(), "miss")
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._in_flight[key] = future
        try:
            value = await compute()
        except BaseException:
            future.set_exception(_LeaderFailed())
            raise
        finally:
            del self._in_flight[key]
        self._put(key, value)
        future.set_result(value)
        return self._count(value, "miss")

    def _put(self, key: str, value: V) -> None:
        self._results[key] = value
        self._results.move_to_end(key)
        while len(self._results) > self.entries:
            self._results.popitem(last=False)

    def _count(self, value: V, outcome: Outcome) -> tuple[V, Outcome]:
        self.counts[outcome] += 1
        return value, outcome


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # followers may be none: no "exception was never retrieved" warning
