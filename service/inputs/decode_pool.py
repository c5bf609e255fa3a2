"""Image decoding and transformation on a thread pool, off the event loop (Pillow releases the GIL)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vitserve.service.core.errors import DeadlineExceeded
from vitserve.vit.config import DataConfig
from vitserve.vit.decode import DecodeLimits, costly_pixels, decode_image
from vitserve.vit.preprocess import transform

# Non-JPEG images with more pixels than this decode in the large lane (one thread): a client sending the biggest
# images the cap allows (seconds of decoding each) queues behind itself instead of taking every decode worker.
LARGE_PIXELS = 8_000_000
# The large lane's thread runs this much nicer than the rest of the process (Linux schedules threads one by one):
# when the CPUs are busy, ordinary requests' decoding and inference go first, and a huge image takes what is
# left instead of an equal share (see docs/decisions.md, "Decode lanes"). Raising niceness needs no privilege.
LARGE_LANE_NICENESS = 10


class DecodePool:
    """``prepare(bytes, cfg)`` → the model input for one image, computed on one of ``workers`` threads, or, for
    an image over ``LARGE_PIXELS``, on the one large-lane thread (found from the header, before decoding)."""

    def __init__(self, workers: int, limits: DecodeLimits) -> None:
        self.limits = limits
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._large = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="decode-large",
            initializer=_lower_priority,
            initargs=(LARGE_LANE_NICENESS,),
        )

    async def prepare(
        self,
        data: bytes,
        cfg: DataConfig,
        *,
        deadline: float | None = None,
        charge: Callable[[float], None] | None = None,
    ) -> tuple[np.ndarray, float]:
        """``(3, img_size, img_size)`` float32 and the milliseconds it took, waiting for a free worker included
        (under load that wait is most of it). Raises the ``ImageError`` family, or ``DeadlineExceeded`` when the
        ``time.monotonic()`` deadline passes before the job starts or between decoding and transforming: work
        nobody waits for any more stops at the next stage instead of holding a worker and its pixels.
        ``charge`` is called on the event loop with the CPU seconds each part of the work took (not the wait),
        whether it succeeded or not, and also when the caller stopped waiting while the work went on."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        report = None if charge is None else functools.partial(_report, loop, charge)
        x = await loop.run_in_executor(self._executor, self._prepare, data, cfg, deadline, False, report)
        if x is None:  # a large image: decoded in its own lane
            x = await loop.run_in_executor(self._large, self._prepare, data, cfg, deadline, True, report)
        assert x is not None
        return x, (time.perf_counter() - started) * 1e3

    def _prepare(
        self,
        data: bytes,
        cfg: DataConfig,
        deadline: float | None,
        large_lane: bool,
        report: Callable[[float], None] | None,
    ) -> np.ndarray | None:
        _check_deadline(deadline)
        started = time.thread_time()
        try:
            # Over the cap: decode_image refuses it from the header at once, no need to queue in the large lane.
            if not large_lane and LARGE_PIXELS < costly_pixels(data) <= self.limits.max_pixels:
                return None
            image = decode_image(data, limits=self.limits, target_size=cfg.resize_size)
            _check_deadline(deadline)
            return transform(image, cfg)
        finally:
            if report is not None:
                report(time.thread_time() - started)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._large.shutdown(wait=False, cancel_futures=True)


def _report(loop: asyncio.AbstractEventLoop, charge: Callable[[float], None], cpu_s: float) -> None:
    """From a worker thread: ``charge(cpu_s)`` on the event loop (unless the loop has closed meanwhile)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(charge, cpu_s)


def _lower_priority(niceness: int) -> None:
    """Make the calling thread ``niceness`` nicer than it is (no-op where threads cannot be reniced)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a sandbox that refuses setpriority
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded("the request's deadline passed while decoding its images")
