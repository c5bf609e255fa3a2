"""Image decoding and transformation on a thread pool, off the event loop (Pillow releases the GIL)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vitserve.service.http.errors import DeadlineExceeded
from vitserve.vit.config import DataConfig
from vitserve.vit.decode import DecodeLimits, decode_image
from vitserve.vit.preprocess import transform


class DecodePool:
    """``prepare(bytes, cfg)`` → the model input for one image, computed on one of ``workers`` threads."""

    def __init__(self, workers: int, limits: DecodeLimits) -> None:
        self.limits = limits
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    async def prepare(self, data: bytes, cfg: DataConfig, *, deadline: float | None = None) -> tuple[np.ndarray, float]:
        """``(3, img_size, img_size)`` float32 and the milliseconds it took, waiting for a free worker included
        (under load that wait is most of it). Raises the ``ImageError`` family, or ``DeadlineExceeded`` when the
        ``time.monotonic()`` deadline passes before the job starts or between decoding and transforming: work
        nobody waits for any more stops at the next stage instead of holding a worker and its pixels."""
        started = time.perf_counter()
        x = await asyncio.get_running_loop().run_in_executor(self._executor, self._prepare, data, cfg, deadline)
        return x, (time.perf_counter() - started) * 1e3

    def _prepare(self, data: bytes, cfg: DataConfig, deadline: float | None) -> np.ndarray:
        _check_deadline(deadline)
        image = decode_image(data, limits=self.limits, target_size=cfg.resize_size)
        _check_deadline(deadline)
        return transform(image, cfg)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded("the request's deadline passed while decoding its images")
