"""Loaded model versions: load beside, warm, swap atomically, retire after the in-flight work drains.

Routing (``route``): ``name`` → the version this service serves for ``name`` (the one loaded at start-up or
last swapped in: ``service.lifecycle.follower`` swaps it when the store's alias moves), or, while the name has a
canary split, one of its two versions by weight; ``name:V`` and ``name@alias`` → exactly that version if it is
loaded. A version that exists in the store
but is not loaded is a 404 ``model_not_loaded`` naming the admin route that loads it: loading on demand
would make one client's request pay seconds of compilation and let any client fill the memory.

Every MindSpore engine call (build, warm-up, batches, for every version) runs on ONE device thread: MindSpore's
graph executor is not re-entrant across threads (compiling one graph while another executes fails with "Nested
execution during JIT execution ... is not supported", then hangs). A new version is warmed one batch size per
job, so the serving version's batches run between its compilations instead of waiting for all of them. With the
CPU engines (ONNX Runtime, OpenVINO) inference never enters MindSpore, and builds, exports and compilations run
on a builder thread instead (``service.lifecycle.work_threads``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.reference import parse_reference
from vitserve.runtime.engine import Engine, EngineOptions
from vitserve.service.batching.batcher import Batcher
from vitserve.service.core.errors import Conflict, LoadFailed, ModelNotLoaded, NotReady
from vitserve.service.core.metrics import Metrics
from vitserve.service.lifecycle.canary import CanarySplit, VersionStats
from vitserve.service.lifecycle.work_threads import BatchWatchdog, builder_for
from vitserve.service.settings import Settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[Card, ModelStore, EngineOptions], Engine]


@dataclass(eq=False)
class LoadedVersion:
    """One version in memory: its card, engine, batcher and the number of requests holding it."""

    card: Card
    engine: Engine
    batcher: Batcher
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0

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


class VersionRegistry:
    """Every loaded version and, per model name, the one that serves it. All methods run on the event loop."""

    def __init__(
        self,
        store: ModelStore,
        settings: Settings,
        factory: EngineFactory,
        metrics: Metrics,
        device: ThreadPoolExecutor,
    ) -> None:
        self.store, self.settings, self.factory, self.metrics = store, settings, factory, metrics
        self.device = device  # the one thread that runs engine code (see the module docstring)
        # Builds, exports, compiles, uploads: off the device thread unless MindSpore serves (work_threads).
        self.builder = builder_for(settings, device)
        self.watchdog = BatchWatchdog(settings.batch_stall_s)
        self.loaded: dict[str, LoadedVersion] = {}  # "name:V" → version
        self.serving: dict[str, str] = {}  # name → "name:V"
        self.failures: dict[str, str] = {}  # "name:V" → why its last load failed
        self.loading: set[str] = set()  # "name:V" being built now (leased before it is loaded)
        self.splits: dict[str, CanarySplit] = {}  # name → its canary split, while it has one
        self.stats = VersionStats()  # per-version outcomes, for the canary guard and /models
        self._rng = random.Random()
        self._load_lock = asyncio.Lock()  # one load at a time: compilation already uses every core

    @property
    def ready(self) -> bool:
        """A version serves and no batch hangs (``BatchWatchdog``)."""
        return bool(self.serving) and not self.watchdog.stalled

    async def route(self, ref: str | None, key: str | None = None) -> LoadedVersion:
        """The loaded version a request for ``ref`` (``None`` → the default model) runs on; ``key`` keeps a
        client on one side of a canary split (see ``CanarySplit.pick``)."""
        ref = ref or self.settings.default_model
        parsed = parse_reference(ref)
        split = self.splits.get(parsed.name)
        if split is not None and parsed.version is None and parsed.alias in (None, split.alias):
            chosen = self.loaded.get(split.pick(key, self._rng))  # the follower serves the split's alias
            if chosen is not None:
                return chosen
        if parsed.version is None and parsed.alias is None:
            if parsed.name in self.serving:
                return self.loaded[self.serving[parsed.name]]
            if not self.serving:
                raise NotReady("no model is loaded yet", retry_after_s=5)
            card = await asyncio.to_thread(self.store.resolve, ref)  # ModelNotFound when unknown
        else:
            card = await asyncio.to_thread(self.store.resolve, ref)
        version = self.loaded.get(card.ref)
        if version is None:
            raise ModelNotLoaded(
                f"{ref} ({card.ref}) exists in the store but is not loaded here; "
                f"an admin can load it with POST /admin/models/{card.ref}/load"
            )
        return version

    async def load(self, ref: str, *, serve: bool) -> LoadedVersion:
        """Load and warm ``ref`` beside what is serving; with ``serve``, make it serve its name (atomic swap).

        On failure the serving version is untouched and the reason is kept (``failures``) and raised as
        ``LoadFailed``. Loading an already loaded version only (re)points ``serving`` when asked.
        """
        async with self._load_lock:
            card = await asyncio.to_thread(self.store.resolve, ref)
            version = self.loaded.get(card.ref)
            if version is None:
                self.loading.add(card.ref)
                try:
                    version = await self._build(card)
                finally:
                    self.loading.discard(card.ref)
                self.loaded[card.ref] = version
                self.metrics.loaded.labels(card.name, str(card.version)).set(0)
            previous = self.serving.get(card.name)
            if serve and previous != card.ref:
                self.serving[card.name] = card.ref  # the swap: one dict assignment on the event loop
                self.metrics.loaded.labels(card.name, str(card.version)).set(1)
                log.info("%s now serves %s (was %s)", card.ref, card.name, previous)
                if previous is not None:
                    self.metrics.loaded.labels(card.name, previous.split(":")[1]).set(0)
                    await self._retire(previous)
            return version

    async def _build(self, card: Card) -> LoadedVersion:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            engine = await loop.run_in_executor(
                self.builder, self.factory, card, self.store, self.settings.engine_options
            )
            if self.settings.warmup:
                await self._warm(engine, card)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            self.failures[card.ref] = reason
            log.error("loading %s failed, nothing changed: %s", card.ref, reason)
            raise LoadFailed(f"{card.ref} failed to load; the serving version is unchanged. {reason}") from err
        self.failures.pop(card.ref, None)
        log.info(
            "%s loaded and warmed in %.1f s (batch sizes %s)", card.ref, time.monotonic() - started, engine.batch_sizes
        )
        observer = self.metrics.observer(card.ref)
        batcher = Batcher(
            self.watchdog.watch(_counting(engine, observer.on_rows)),
            max_batch_size=self.settings.max_batch_size,
            max_delay_ms=self.settings.max_delay_ms,
            queue_size=self.settings.queue_size,
            executor=self.device,
            observer=observer,
            name=f"batcher-{card.ref}",
        )
        batcher.start()
        return LoadedVersion(card, engine, batcher)

    async def _warm(self, engine: Engine, card: Card) -> None:
        """Run every batch size once, one device job each (batches of serving versions interleave), then
        ``engine.warmup()`` for whatever else the engine prepares."""
        loop = asyncio.get_running_loop()
        shape = (card.config.in_chans, card.config.img_size, card.config.img_size)
        for size in engine.batch_sizes:
            zeros = np.zeros((size, *shape), dtype=np.float32)
            await loop.run_in_executor(self.builder, engine.run, zeros)
        await loop.run_in_executor(self.builder, engine.warmup)

    async def unload(self, ref: str) -> Card:
        """Retire a loaded version that is not serving its name (swap another one in first)."""
        card = await asyncio.to_thread(self.store.resolve, ref)
        if card.ref not in self.loaded:
            raise ModelNotLoaded(f"{card.ref} is not loaded")
        if self.serving.get(card.name) == card.ref:
            raise Conflict(f"{card.ref} serves {card.name!r}: load another version with serve=true first")
        await self._retire(card.ref)
        return card

    async def _retire(self, ref: str) -> None:
        """Wait (bounded) for the requests holding ``ref`` to finish, then stop its batcher and drop it."""
        version = self.loaded.get(ref)
        if version is None:
            return
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while version.leases and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await version.batcher.stop(drain=True, timeout_s=max(0.0, deadline - time.monotonic()))
        self.loaded.pop(ref, None)
        name, number = ref.split(":")
        self.metrics.loaded.remove(name, number)
        log.info("%s unloaded", ref)

    async def close(self) -> None:
        """Drain and stop every version (the lifespan's shutdown)."""
        self.serving.clear()
        for ref in list(self.loaded):
            await self._retire(ref)
        if self.builder is not self.device:
            self.builder.shutdown(wait=False, cancel_futures=True)


def _counting(engine: Engine, on_rows: Callable[[int, int], None]) -> Callable[[np.ndarray], np.ndarray]:
    """``engine.run`` that also reports padded rows (engines that do not pad report none)."""
    padded_size = getattr(engine, "padded_size", None)

    def run(batch: np.ndarray) -> np.ndarray:
        out = engine.run(batch)
        rows = len(batch)
        on_rows(rows, padded_size(rows) if padded_size is not None else rows)
        return out

    return run
