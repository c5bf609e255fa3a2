"""Which thread runs what: inference alone on the device thread; building, exporting, compiling and verifying
on a builder thread whenever the engines allow it; and a watchdog on batch progress for readiness.

MindSpore's graph executor is not re-entrant across threads (see ``service.lifecycle.versions``), so while the
serving engines are MindSpore every MindSpore call (build, compile, warm-up, an upload's verification) shares
the device thread with inference. When they are ONNX Runtime or OpenVINO, inference never enters MindSpore: the
MindSpore work of a load or an upload (verify, ONNX export) and the CPU engines' compilation run on a separate
builder thread, one job at a time, and serving batches never wait behind them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vitserve.runtime.engine import resolve_kind
from vitserve.service.settings import Settings


def builder_for(settings: Settings, device: ThreadPoolExecutor) -> ThreadPoolExecutor:
    """A builder thread of its own when the engines leave MindSpore off the inference path, else ``device``."""
    if resolve_kind(settings.engine, settings.device_target) == "mindspore":
        return device
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="builder")


class BatchWatchdog:
    """Notices a batch that has run longer than ``stall_s``: readiness turns false until it returns, so the
    orchestrator stops sending traffic to a replica whose engine hangs (and restarts it, if liveness says so)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._running: dict[int, float] = {}  # id of a running batch → when it started (monotonic)

    def watch(self, run: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        """``run`` with its calls timed."""

        def watched(batch: np.ndarray) -> np.ndarray:
            key = id(batch)
            self._running[key] = time.monotonic()
            try:
                return run(batch)
            finally:
                self._running.pop(key, None)

        return watched

    def stalled_s(self) -> float:
        """How long the oldest running batch has run beyond ``stall_s`` (0 when none has)."""
        started = min(self._running.values(), default=None)
        if started is None:
            return 0.0
        return max(0.0, time.monotonic() - started - self.stall_s)

    @property
    def stalled(self) -> bool:
        return self.stalled_s() > 0
