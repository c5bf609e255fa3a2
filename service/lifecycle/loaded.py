"""One loaded version (``LoadedVersion``: card, engine, batcher, result cache) and how one is built and warmed.

The registry (``service.lifecycle.versions``) decides when a version is built and owns it afterwards; this module
only builds: the engine on the builder thread (the device thread while MindSpore serves, see
``service.lifecycle.work_threads``), a warm-up of every batch size, one job each so that serving batches run
between them, then the version's batcher, which takes its turns on the device through the shared
``DeviceScheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vitserve.model_store import Card, ModelStore
from vitserve.runtime.engine import Engine, EngineOptions
from vitserve.service.batching.batcher import Batcher
from vitserve.service.batching.scheduler import DeviceScheduler
from vitserve.service.core.metrics import Metrics
from vitserve.service.core.result_cache import ResultCache
from vitserve.service.core.schemas import Timings
from vitserve.service.lifecycle.work_threads import BatchWatchdog
from vitserve.service.settings import Settings

EngineFactory = Callable[[Card, ModelStore, EngineOptions], Engine]
# A cached answer: one image's ``(C,)`` logits and the timings of the inference that produced them.
CachedResult = tuple[np.ndarray, Timings]


@dataclass(eq=False)
class LoadedVersion:
    """One version in memory: its card, engine, batcher, the number of requests holding it, and its duplicate-image
    cache when its model opted in."""

    card: Card
    engine: Engine
    batcher: Batcher
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    results: ResultCache[CachedResult] | None = None

    @property
    def ref(self) -> str:
        return self.card.ref

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[LoadedVersion]:
        """Held by a request from routing to its answer: the version is not retired while held."""
        self.leases += 1
        try:
            yield self
        finally:
            self.leases -= 1


@dataclass(frozen=True)
class Threads:
    """Where a version's work runs: ``builder`` builds and warms, ``device`` runs the batches, one at a time as
    ``scheduler`` grants them; ``watchdog`` times every batch."""

    builder: ThreadPoolExecutor
    device: ThreadPoolExecutor
    scheduler: DeviceScheduler
    watchdog: BatchWatchdog


async def build_version(
    card: Card, store: ModelStore, settings: Settings, factory: EngineFactory, threads: Threads, metrics: Metrics
) -> LoadedVersion:
    """``card``'s version built, warmed and with its batcher started; raises what the build or warm-up raised."""
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(threads.builder, factory, card, store, settings.engine_options)
    if settings.warmup:
        await _warm(engine, card, threads.builder)
    observer = metrics.observer(card.ref)
    batcher = Batcher(
        threads.watchdog.watch(_counting(engine, observer.on_rows)),
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_delay_ms,
        queue_size=settings.queue_size,
        executor=threads.device,
        observer=observer,
        name=f"batcher-{card.ref}",
        scheduler=threads.scheduler,
        share=card.name,  # a model's versions (a canary and its stable one) share its share of the device
    )
    batcher.start()
    cache = ResultCache[CachedResult](settings.result_cache_entries) if settings.caches_results(card.name) else None
    return LoadedVersion(card, engine, batcher, results=cache)


async def _warm(engine: Engine, card: Card, builder: ThreadPoolExecutor) -> None:
    """Run every batch size once, one job each (batches of serving versions interleave), then ``engine.warmup()``
    for whatever else the engine prepares."""
    loop = asyncio.get_running_loop()
    for size in engine.batch_sizes:
        zeros = np.zeros((size, *card.input_shape), dtype=np.float32)
        await loop.run_in_executor(builder, engine.run, zeros)
    await loop.run_in_executor(builder, engine.warmup)


def _counting(engine: Engine, on_rows: Callable[[int, int], None]) -> Callable[[np.ndarray], np.ndarray]:
    """``engine.run`` that also reports padded rows (engines that do not pad report none)."""
    padded_size = getattr(engine, "padded_size", None)

    def run(batch: np.ndarray) -> np.ndarray:
        out = engine.run(batch)
        rows = len(batch)
        on_rows(rows, padded_size(rows) if padded_size is not None else rows)
        return out

    return run
