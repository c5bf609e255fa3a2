"""A replica's model versions, with one owner: ``VersionRegistry``.

What a replica should hold (the desired set) comes from four kinds of intent, each sent to the registry and
never written anywhere else: what the store says each followed name serves (``follow``: a stable version and
perhaps a canary beside it, from ``service.lifecycle.follower``), explicit pins (``pin``/``unpin``: the admin API's
load and unload, Triton's explicit model control; they stay until unpinned, whatever the store does), short
holds (``hold``: a version loaded ahead of an alias change, so that a version that cannot load never gets the
alias), and requests (``route``: a version loaded on demand, kept while the memory budget allows). What it holds
(the actual set) moves only through the transitions load → warm → serve → drain → unload, and after each intent
every loaded version that no intent wants any more is drained and unloaded. The replica's
lease in the store names exactly what is loaded or loading, renewed after every change of that set, so a
version is leased as long as it is held and no longer.

Routing (``route``): ``name`` → the version this replica serves for ``name``, or, while the name has a canary
split, one of its two versions by weight; ``name:V`` and ``name@alias`` → exactly that version if it is loaded.
A version that exists in the store but is not loaded is loaded on demand when its model is listed in
``ON_DEMAND_MODELS``, under the memory budget (``service.lifecycle.residency``): the least recently used versions
loaded on demand are evicted first to make room, served, canary, held and pinned ones never; requests for the same
cold version wait on one load, each at most until its deadline (503 ``model_loading`` then, the load goes on), and
a version that cannot fit beside what is never evicted is a 503 ``insufficient_memory``. A bare name loaded this
way is re-resolved in the background once a store poll interval has passed, so a new production version is picked
up without a store call on the request's path. A model not listed gets a 404 ``model_not_loaded`` naming the admin
route that loads the version. Store calls go through ``StoreCalls`` (own threads, deadlines): a hung store never
blocks serving.

Every MindSpore engine call (build, warm-up, batches, for every version) runs on ONE device thread: MindSpore's
graph executor is not re-entrant across threads (compiling one graph while another executes fails with "Nested
execution during JIT execution ... is not supported", then hangs). A new version is warmed one batch size per
job, so the serving version's batches run between its compilations instead of waiting for all of them. With the
CPU engines (ONNX Runtime, OpenVINO) inference never enters MindSpore, and builds, exports and compilations run
on a builder thread instead (``service.lifecycle.work_threads``). Batches of different models take turns on the
device thread by weighted fair queuing (``service.batching.scheduler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.leases import default_replica_id
from vitserve.model_store.reference import parse_reference
from vitserve.service.batching.scheduler import DeviceScheduler
from vitserve.service.core.errors import Conflict, LoadFailed, ModelNotLoaded, NotReady, without_paths
from vitserve.service.core.metrics import Metrics
from vitserve.service.lifecycle.canary import CanarySplit, VersionStats
from vitserve.service.lifecycle.loaded import EngineFactory, LoadedVersion, Threads, build_version
from vitserve.service.lifecycle.on_demand import DemandLoads
from vitserve.service.lifecycle.residency import (
    MIB,
    NoRoom,
    Residence,
    Residency,
    default_budget,
    expected_precision,
    give_back_memory,
)
from vitserve.service.lifecycle.store_calls import StoreCalls, StoreUnreachable
from vitserve.service.lifecycle.work_threads import BatchWatchdog, builder_for
from vitserve.service.settings import Settings

__all__ = ["EngineFactory", "LoadedVersion", "Target", "VersionRegistry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What the store says a name should serve: ``stable`` (``name:V``), and a canary beside it."""

    stable: str
    alias: str | None = None
    canary: str | None = None
    weight: float = 0.0


class VersionRegistry:
    """The one owner of a replica's versions (see the module docstring). All methods run on the event loop; the
    state is read through read-only views, and changed only by the intents ``load``, ``follow``, ``pin``,
    ``unpin``, ``hold``, ``close`` and a request's ``route`` to a version loaded on demand."""

    def __init__(
        self,
        store: ModelStore,
        settings: Settings,
        factory: EngineFactory,
        metrics: Metrics,
        device: ThreadPoolExecutor,
        store_calls: StoreCalls | None = None,
    ) -> None:
        self.store, self.settings, self.factory, self.metrics = store, settings, factory, metrics
        self.store_calls = store_calls or StoreCalls(timeout_s=settings.store_timeout_s)
        self.replica = settings.replica_id or default_replica_id()
        self.device = device  # the one thread that runs engine code (see the module docstring)
        # Builds, exports, compiles, uploads: off the device thread unless MindSpore serves (work_threads).
        self.builder = builder_for(settings, device)
        self.watchdog = BatchWatchdog(settings.batch_stall_s)
        self.scheduler = DeviceScheduler(settings.model_weights)  # whose batch runs next on the device
        self.stats = VersionStats()  # per-version outcomes, for the canary guard and /models
        budget = settings.memory_budget or default_budget(settings.memory_headroom_bytes)
        self.residency = Residency(budget, metrics=metrics)  # the memory budget, costs, last uses (read-only)
        self._loaded: dict[str, LoadedVersion] = {}  # "name:V" → version
        self._serving: dict[str, str] = {}  # name → "name:V"
        self._splits: dict[str, CanarySplit] = {}  # name → its canary split, while it has one
        self._failures: dict[str, str] = {}  # "name:V" → why its last load failed
        self._loading: set[str] = set()  # "name:V" being built now (leased before it is loaded)
        self._pins: set[str] = set()  # explicit loads: kept until an explicit unload
        self._draining: dict[str, LoadedVersion] = {}  # retired, finishing the requests that hold them
        self._holds: dict[str, int] = {}  # "name:V" → holders of ``hold`` (an alias change about to name it)
        self._demand: set[str] = set()  # loaded on demand: kept while the budget allows, least recently used go first
        self._rng = random.Random()
        self._load_lock = asyncio.Lock()  # one load at a time: compilation already uses every core
        self._lease_lock = asyncio.Lock()  # lease writes of one replica share a temporary file name
        # What requests need on the way to a version loaded on demand: resolutions, shared store calls and loads.
        load = functools.partial(self._ensure, demand=True)
        self.demand = DemandLoads(store, self.store_calls, settings, self.residency, metrics, self.loaded, load)

    # ----- read-only views -----------------------------------------------------------------------------------

    @property
    def loaded(self) -> Mapping[str, LoadedVersion]:
        return MappingProxyType(self._loaded)

    @property
    def serving(self) -> Mapping[str, str]:
        return MappingProxyType(self._serving)

    @property
    def splits(self) -> Mapping[str, CanarySplit]:
        return MappingProxyType(self._splits)

    @property
    def failures(self) -> Mapping[str, str]:
        return MappingProxyType(self._failures)

    @property
    def loading(self) -> frozenset[str]:
        return frozenset(self._loading)

    @property
    def pins(self) -> frozenset[str]:
        return frozenset(self._pins)

    @property
    def on_demand(self) -> frozenset[str]:
        """Versions loaded on demand (some may also be wanted by another intent, which then keeps them)."""
        return frozenset(self._demand)

    @property
    def ready(self) -> bool:
        """A version serves and no batch hangs (``BatchWatchdog``)."""
        return bool(self._serving) and not self.watchdog.stalled

    def in_use(self, name: str) -> set[str]:
        """The versions of ``name`` that unpinned requests are routed to: the serving one and a canary."""
        split = self._splits.get(name)
        serving = self._serving.get(name)
        return {*([serving] if serving else ()), *((split.stable, split.canary) if split else ())}

    def kept(self) -> set[str]:
        """The versions an intent other than a request wants: served, canary, held, pinned. Never evicted."""
        return {*self._pins, *self._holds, *(r for name in self._serving for r in self.in_use(name))}

    def evictable(self) -> set[str]:
        """Loaded versions only requests wanted (loaded on demand): what may be evicted to make room."""
        return {ref for ref in self._loaded if ref in self._demand} - self.kept()

    def residence(self, ref: str) -> Residence:
        if ref in self._loaded:
            return "resident"
        if ref in self._loading or self.demand.loading(ref):
            return "loading"
        return "draining" if ref in self._draining else "cold"

    # ----- routing -------------------------------------------------------------------------------------------

    async def route(self, ref: str | None, key: str | None = None, *, deadline: float | None = None) -> LoadedVersion:
        """The loaded version a request for ``ref`` (``None`` → the default model) runs on; ``key`` keeps a
        client on one side of a canary split (see ``CanarySplit.pick``). A version not loaded is loaded on demand
        when its model allows it, the request waiting until ``deadline`` (monotonic; default: the server's request
        timeout from now)."""
        ref = ref or self.settings.default_model
        parsed = parse_reference(ref)
        bare = parsed.version is None and parsed.alias is None
        split = self._splits.get(parsed.name)
        if split is not None and parsed.version is None and parsed.alias in (None, split.alias):
            chosen = self._loaded.get(split.pick(key, self._rng))  # the follower serves the split's alias
            if chosen is not None:
                return self._hit(chosen)
        if bare:
            if parsed.name in self._serving:
                return self._hit(self._loaded[self._serving[parsed.name]])
            if (known := self.demand.named(parsed.name)) is not None:  # loaded on demand before: no store call
                version = self._loaded.get(known.ref)
                return self._hit(version) if version else await self.demand.wait(ref, known, deadline)
            if not self._serving:
                raise NotReady("no model is loaded yet", retry_after_s=5)
        elif parsed.version is not None and (version := self._loaded.get(f"{parsed.name}:{parsed.version}")):
            return self._hit(version)  # a loaded version needs no store call
        card = self.demand.card(ref) or await self.demand.resolve(ref)  # ModelNotFound when unknown
        version = self._loaded.get(card.ref)
        version = self._hit(version) if version else await self.demand.wait(ref, card, deadline)
        if card.ref in self._demand:  # the next request for it needs no store call
            self.demand.remember(card, parsed.name if bare else None)
        return version

    def _hit(self, version: LoadedVersion) -> LoadedVersion:
        self.residency.touch(version.ref)
        return version

    # ----- intents -------------------------------------------------------------------------------------------

    async def load(self, ref: str, *, serve: bool) -> LoadedVersion:
        """Load and warm ``ref``; with ``serve``, make it serve its name (atomic swap), else pin it (it stays
        until ``unpin``). Start-up serves the default model this way, and a replica pinned to ``name:V`` swaps
        by hand. On failure nothing changes, the reason is kept (``failures``) and raised as ``LoadFailed``."""
        card = await self.store_calls.run(self.store.resolve, ref)
        version = await self._ensure(card)
        if serve:
            self._serve(card.name, card.ref)
        else:
            self._pins.add(card.ref)
        await self._collect()
        return version

    async def pin(self, ref: str) -> LoadedVersion:
        """An explicit load: ``ref`` is loaded (if it is not) and stays until ``unpin``, whatever the store does."""
        return await self.load(ref, serve=False)

    async def unpin(self, ref: str) -> Card:
        """An explicit unload: the pin goes, and the version with it unless it serves its name or a canary (a
        version loaded on demand goes too: the admin asked for it to go)."""
        card = await self.store_calls.run(self.store.resolve, ref)
        if card.ref not in self._loaded:
            raise ModelNotLoaded(f"{card.ref} is not loaded")
        if card.ref not in self._pins and card.ref in self.in_use(card.name):
            raise Conflict(f"{card.ref} serves {card.name!r}: load another version with serve=true first")
        self._pins.discard(card.ref)  # a pinned version that also serves stays loaded, as served, unpinned
        self._demand.discard(card.ref)
        await self._collect()
        return card

    @contextlib.asynccontextmanager
    async def hold(self, ref: str) -> AsyncIterator[LoadedVersion]:
        """``ref`` loaded and kept while the block runs (an alias about to name it); afterwards it stays only
        if another intent wants it."""
        card = await self.store_calls.run(self.store.resolve, ref)
        self._holds[card.ref] = self._holds.get(card.ref, 0) + 1
        try:
            yield await self._ensure(card)
        finally:
            self._holds[card.ref] -= 1
            if not self._holds[card.ref]:
                del self._holds[card.ref]
            await self._collect()

    async def follow(self, name: str, target: Target) -> None:
        """What the store says ``name`` serves: ``target.stable``, and a canary split when it names one. Raises
        (``LoadFailed``, a store error) with the name left on what it served."""
        split = self._splits.get(name)
        if split is not None and (split.stable, split.canary) != (target.stable, target.canary):
            del self._splits[name]  # first: no request may be routed to a version about to retire
        try:
            if self._serving.get(name) != target.stable:
                await self._ensure(await self.store_calls.run(self.store.resolve, target.stable))
                self._serve(name, target.stable)
            if target.canary is not None and target.alias is not None:
                await self._split(name, target)
        finally:
            await self._collect()

    async def _split(self, name: str, target: Target) -> None:
        assert target.canary is not None and target.alias is not None
        current = self._splits.get(name)
        if current is not None and current.weight == target.weight:
            return
        await self._ensure(await self.store_calls.run(self.store.resolve, target.canary))
        if current is None:
            self.stats.reset(target.stable, target.canary)  # judge both sides over the same window
        self._splits[name] = CanarySplit(name, target.alias, target.stable, target.canary, target.weight)
        log.info("%s: canary %s takes %.1f %% beside %s", name, target.canary, target.weight, target.stable)

    async def renew_lease(self) -> None:
        """The replica's lease in the store: exactly what is loaded or being loaded."""
        async with self._lease_lock:  # one write at a time, each with the set as it is when it starts
            holds = {*self._loaded, *self._loading, *self._draining}
            await self.store_calls.run(self.store.leases.renew, self.replica, holds, self.settings.lease_ttl_s)

    async def close(self) -> None:
        """Drain and stop every version, then release the lease (the lifespan's shutdown)."""
        self.demand.close()
        self._serving.clear()
        self._splits.clear()
        self._pins.clear()
        self._demand.clear()
        for ref in list(self._loaded):
            await self._retire(ref)
        with contextlib.suppress(StoreUnreachable):  # a hung store: the lease expires by itself
            await self.store_calls.run(self.store.leases.release, self.replica)
        if self.builder is not self.device:
            self.builder.shutdown(wait=False, cancel_futures=True)

    # ----- transitions -----------------------------------------------------------------------------------------

    def _serve(self, name: str, ref: str) -> None:
        previous = self._serving.get(name)
        if previous == ref:
            return
        self._serving[name] = ref  # the swap: one dict assignment on the event loop
        self.metrics.loaded.labels(*ref.split(":")).set(1)
        if previous is not None:
            self.metrics.loaded.labels(*previous.split(":")).set(0)
        log.info("%s now serves %s (was %s)", ref, name, previous)

    async def _ensure(self, card: Card, *, demand: bool = False) -> LoadedVersion:
        """``card``'s version loaded and warmed (load → warm), leased before it is built so that no delete can
        race the load, with room made for it in the memory budget first (``_make_room``) and its measured cost
        held to the budget after (``_fit``)."""
        async with self._load_lock:
            version = self._loaded.get(card.ref)
            if version is not None:
                return version
            precision = expected_precision(card, self.settings.engine_precision)
            await self._make_room(card, self.residency.estimate(card, precision), demand=demand)
            self._loading.add(card.ref)
            mark = self.residency.mark()
            try:
                await self.renew_lease()
                version = await self._build(card)
            finally:
                self._loading.discard(card.ref)
            ran = getattr(version.engine, "precision", None)
            cost = self.residency.loaded(card, mark, ran or precision, cause="demand" if demand else "intent")
            self._loaded[card.ref] = version
            if demand:
                self._demand.add(card.ref)
            self.metrics.loaded.labels(card.name, str(card.version)).set(0)
            await self._fit(card, cost, demand=demand)
            return version

    async def _make_room(self, card: Card, need: int, *, demand: bool) -> None:
        """Evict the least recently used versions loaded on demand until ``need`` bytes fit in the budget. A load on
        demand that cannot fit even with all of them gone is ``NoRoom`` (nothing evicted); any other intent
        evicts them all and loads over the budget, with a warning: an operator's explicit choice is not refused."""
        victims, fits = self.residency.victims(need, self.evictable())
        if not fits and demand:
            raise self._no_room(card, need)
        if not fits and self.settings.on_demand_models:  # without loading on demand the budget binds nothing
            log.warning("%s: loading over the memory budget (about %.0f MiB more)", card.ref, need / MIB)
        for ref in victims:
            await self._evict(ref)

    async def _fit(self, card: Card, cost: int, *, demand: bool) -> None:
        """After a load, with its measured ``cost``: more evictions if the estimate was short; a version loaded on
        demand that cannot fit even then is unloaded again (``NoRoom``)."""
        if self.residency.used <= self.residency.budget:
            return
        victims, fits = self.residency.victims(0, self.evictable() - {card.ref})
        if not fits and demand:
            self._demand.discard(card.ref)
            await self._retire(card.ref)
            raise self._no_room(card, cost)
        for ref in victims:
            await self._evict(ref)

    def _no_room(self, card: Card, need: int) -> NoRoom:
        kept = sorted(ref for ref in self.kept() if ref in self.residency.costs)
        held = sum(self.residency.costs[ref] for ref in kept)
        return NoRoom(
            f"{card.ref} needs about {need / MIB:.0f} MiB and does not fit in this replica's memory budget "
            f"({self.residency.budget / MIB:.0f} MiB, of which {held / MIB:.0f} MiB are held by versions that are "
            f"never evicted: {', '.join(kept) or 'none'}); retry later, or ask an admin to unload one",
            retry_after_s=30,
        )

    async def _evict(self, ref: str) -> None:
        """Unload ``ref``, loaded on demand, to make room (the least recently used goes first)."""
        use = self.residency.use(ref)
        idle_s = time.monotonic() - use.last_used_mono
        log.info("evicting %s (least recently used: idle %.1f s) to make room in the memory budget", ref, idle_s)
        self._demand.discard(ref)
        self.residency.evicted(ref)
        await self._retire(ref)

    async def _collect(self) -> None:
        """Drain and unload every loaded version no intent wants any more, then renew the lease to match."""
        wanted = self.kept() | self._demand
        for ref in [r for r in self._loaded if r not in wanted]:
            await self._retire(ref)
        try:
            await self.renew_lease()
        except (StoreUnreachable, OSError) as err:  # the periodic renewal tries again
            log.warning("lease renewal after a change failed: %s", err)

    async def _build(self, card: Card) -> LoadedVersion:
        started = time.monotonic()
        threads = Threads(self.builder, self.device, self.scheduler, self.watchdog)
        try:
            version = await build_version(card, self.store, self.settings, self.factory, threads, self.metrics)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            self._failures[card.ref] = reason
            log.error("loading %s failed, nothing changed: %s", card.ref, reason)
            public = without_paths(reason)  # a client learns why, not where: the full reason is in the log above
            raise LoadFailed(f"{card.ref} failed to load; the serving version is unchanged. {public}") from err
        self._failures.pop(card.ref, None)
        log.info(
            "%s loaded and warmed in %.1f s (batch sizes %s)",
            card.ref,
            time.monotonic() - started,
            version.engine.batch_sizes,
        )
        return version

    async def _retire(self, ref: str) -> None:
        """drain → unload: no new request is routed to ``ref``; wait (bounded) for those holding it, stop its
        batcher, drop it. It stays in the lease until it is gone."""
        version = self._loaded.pop(ref, None)
        if version is None:
            return
        self._draining[ref] = version
        try:
            deadline = time.monotonic() + self.settings.drain_timeout_s
            while version.leases and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await version.batcher.stop(drain=True, timeout_s=max(0.0, deadline - time.monotonic()))
        finally:
            del self._draining[ref]
        del version  # the engine's memory goes with the last reference
        self.residency.unloaded(ref)
        self.metrics.loaded.remove(*ref.split(":"))
        await asyncio.to_thread(give_back_memory)  # not on the builder: it may be busy with a long build
        log.info("%s unloaded", ref)
