"""Every replica follows the store: aliases and canaries written by any process reach it within a poll.

Each ``store_poll_interval_s`` the follower stats the store (``ModelStore.generation``: the model directory and
its alias table, no reads) for every name this replica serves. When that changes, it reads what the followed
reference means now (the default model's reference for its name, else the bare name: ``production``, or the
latest version) and acts as a hot swap does: the new version is loaded and warmed beside the serving one, then
swapped in, and the old one retires once its in-flight requests drain. A canary behind the followed alias is
loaded beside the stable version and becomes a weighted split (``service.lifecycle.canary``).

Why polling: the store is a shared filesystem (NFS, CephFS, EFS), where inotify and its kin report only the
local kernel's writes, never another client's. A stat per name per poll is cheap on any of them. On NFS the
client's attribute cache (``actimeo``) adds its own delay on top of the poll interval.

A version that fails to load leaves the replica on what it serves, says so (``/models``, the
``vitserve_store_in_sync`` gauge, the log) and is retried with exponential backoff, not at every poll. The
same loop renews this replica's lease in the store (``model_store.leases``) with every version it holds or is
about to load, and, when the canary guard is on, aborts a canary that does worse than its stable version by
writing the abort to the store, which every replica then follows.

The follower only says what the store wants (``VersionRegistry.follow``); the registry owns what is loaded, so an
explicit load on this replica (a pin) stays whatever the store does. Only a change in the store moves a name: a
version an admin swapped in by hand on one replica
(``POST /admin/models/{ref}/load?serve=true``) stays until the store next changes for that name. A replica whose
default model is pinned (``name:V``) does not follow that name at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.promotion import GATED_ALIAS
from vitserve.model_store.reference import parse_reference
from vitserve.service.core.errors import LoadFailed, ServiceError
from vitserve.service.lifecycle.canary import CanarySplit, Guard
from vitserve.service.lifecycle.versions import Target, VersionRegistry
from vitserve.service.settings import Settings

log = logging.getLogger(__name__)

_MAX_BACKOFF_STEPS = 5  # retries wait follow_retry_s × 1, 2, 4, 8, 16, then 16 again


@dataclass
class SyncState:
    """One followed name: the last generation seen, the target it means, and a failed attempt's backoff."""

    followed: str  # the reference followed: "tiny", "tiny@staging"
    generation: tuple[int, ...] | None = None
    target: Target | None = None
    pending: bool = False  # the target is not (yet) what the registry serves
    error: str | None = None
    attempts: int = 0
    retry_at: float = 0.0  # time.monotonic() of the next attempt after a failure


class StoreFollower:
    """The poll loop; ``sync(name)`` also runs on demand (after an admin route changed the store)."""

    def __init__(self, registry: VersionRegistry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings
        self.store: ModelStore = registry.store
        self.calls = registry.store_calls
        self.replica = registry.replica
        self.guard = (
            Guard(settings.canary_min_requests, settings.canary_max_error_rate_delta, settings.canary_max_p99_ratio)
            if settings.canary_guard
            else None
        )
        self.states: dict[str, SyncState] = {}
        self.aborts: dict[str, str] = {}  # name → why the guard last aborted its canary (this replica's guard)
        self._lock = asyncio.Lock()  # one reconciliation at a time: the last one reads the store's final state
        self._task: asyncio.Task[None] | None = None
        r = registry.metrics.registry
        self.in_sync = Gauge(
            "vitserve_store_in_sync", "1 when a name serves what the store says", ["model"], registry=r
        )
        self.failures = Counter(
            "vitserve_store_sync_failures",
            "Failed loads of a version the store names",
            ["model", "version"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "vitserve_canary_weight",
            "Percent of a name's requests sent to its canary",
            ["model", "version"],
            registry=r,
        )
        self.guard_aborts = Counter(
            "vitserve_canary_aborts", "Canaries aborted by this replica's guard", ["model", "version"], registry=r
        )

    # ----- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.renew_lease()
        period = min(p for p in (self.settings.store_poll_interval_s, self.settings.lease_ttl_s / 3) if p > 0)
        self._task = asyncio.create_task(self._run(period), name="store-follower")
        log.info(
            "following the store every %.2f s as replica %s (lease TTL %.1f s)",
            self.settings.store_poll_interval_s,
            self.replica,
            self.settings.lease_ttl_s,
        )

    async def stop(self) -> None:
        """Stop following; the lease goes when the registry has unloaded everything (``VersionRegistry.close``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, period_s: float) -> None:
        lease_due = 0.0
        while True:
            await asyncio.sleep(period_s)
            try:
                if time.monotonic() >= lease_due:
                    await self.renew_lease()
                    lease_due = time.monotonic() + self.settings.lease_ttl_s / 3
                if self.settings.store_poll_interval_s > 0:
                    for name in list(self.registry.serving):
                        await self.sync(name, force=False)
                if self.guard is not None:
                    await self._judge()
            except Exception:  # the loop must outlive any one bad poll (a store briefly unreachable, ...)
                log.exception("store follower: poll failed; trying again in %.2f s", period_s)

    async def renew_lease(self) -> None:
        await self.registry.renew_lease()

    # ----- following ---------------------------------------------------------------------------------------

    def followed(self, name: str) -> str | None:
        """The reference this replica follows for ``name``; ``None`` when it is pinned (``name:V``)."""
        default = parse_reference(self.settings.default_model)
        if default.name != name:
            return name
        return None if default.version is not None else self.settings.default_model

    async def sync(self, name: str, *, force: bool = True) -> SyncState | None:
        """Bring ``name`` to what the store says. Without ``force`` (the poll) nothing is read unless the
        store's generation changed or a failed attempt's backoff is over."""
        followed = self.followed(name)
        if followed is None:
            return None
        state = self.states.setdefault(name, SyncState(followed))
        async with self._lock:
            generation = await self.calls.run(self.store.generation, name)
            changed = generation != state.generation
            if not (force or changed or (state.pending and time.monotonic() >= state.retry_at)):
                return state
            try:
                target = await self.calls.run(self._read_target, followed)
            except StoreError as err:  # the alias or the model is gone: keep serving what we have
                log.warning("store follower: cannot resolve %s (%s); %s keeps serving", followed, err, name)
                state.generation = generation
                return state
            state.generation = generation
            if target != state.target:
                state.target, state.pending, state.attempts, state.retry_at = target, True, 0, 0.0
            elif not state.pending or (not force and time.monotonic() < state.retry_at):
                return state
            await self._apply(name, state, target)
        return state

    def _read_target(self, followed: str) -> Target:
        parsed = parse_reference(followed)
        card = self.store.resolve(followed)
        alias = parsed.alias
        if alias is None and GATED_ALIAS in self.store.aliases(parsed.name):
            alias = GATED_ALIAS
        canary = self.store.canary(parsed.name, alias) if alias is not None and parsed.version is None else None
        if canary is None:
            return Target(card.ref, alias)
        return Target(card.ref, alias, f"{card.name}:{canary.version}", canary.weight)

    async def _apply(self, name: str, state: SyncState, target: Target) -> None:
        before = self.registry.splits.get(name)
        try:
            await self.registry.follow(name, target)
        except (LoadFailed, StoreError, ServiceError) as err:
            self._failed(name, state, err)
            return
        finally:
            self._show_split(name, before)
        state.pending, state.error, state.attempts = False, None, 0
        self.in_sync.labels(name).set(1)

    def _show_split(self, name: str, before: CanarySplit | None) -> None:
        """The canary-weight gauge after ``follow`` changed (or kept) ``name``'s split."""
        after = self.registry.splits.get(name)
        if before is not None and (after is None or after.canary != before.canary):
            self.canary_weight.remove(*before.canary.split(":"))
        if after is not None:
            self.canary_weight.labels(*after.canary.split(":")).set(after.weight)

    def _failed(self, name: str, state: SyncState, err: Exception) -> None:
        state.attempts += 1
        delay = self.settings.follow_retry_s * 2 ** min(state.attempts - 1, _MAX_BACKOFF_STEPS - 1)
        state.pending, state.error, state.retry_at = True, str(err), time.monotonic() + delay
        target = state.target
        failed = target.stable if target and target.stable not in self.registry.loaded else (target and target.canary)
        if failed:
            self.failures.labels(*failed.split(":")).inc()
        self.in_sync.labels(name).set(0)
        log.error(
            "%s: cannot follow the store to %s (%s); still serving %s; retry %d in %.0f s",
            name,
            failed,
            err,
            self.registry.serving.get(name),
            state.attempts,
            delay,
        )

    # ----- the canary guard --------------------------------------------------------------------------------

    async def _judge(self) -> None:
        assert self.guard is not None
        for name, split in list(self.registry.splits.items()):
            reason = self.guard.verdict(split, self.registry.stats)
            if reason is None:
                continue
            canary_version = int(split.canary.split(":")[1])
            try:
                end = functools.partial(self.store.end_canary, promote=False, only_version=canary_version)
                await self.calls.run(end, name, split.alias)
            except StoreError as err:  # already ended or replaced by someone else: nothing to abort
                log.info("canary guard: %s@%s: %s", name, split.alias, err)
                continue
            self.aborts[name] = f"{split.canary} aborted by the guard of {self.replica}: {reason}"
            self.guard_aborts.labels(*split.canary.split(":")).inc()
            log.error("canary guard: %s", self.aborts[name])
            await self.sync(name)
