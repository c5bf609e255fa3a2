"""The chaos test's checker: reads the store and every live replica over and over, and checks invariants 2 to 5
(``benchmarks.chaos`` states them and their allowances) on every reading.

One tick: the store's versions, then its target (aliases and canary), then each live replica's
``GET /models/{name}`` and ``/metrics``, then the store's target again. What that order proves:

- Version numbers are never reused, so a number at or below the highest ever listed that the store no longer
  lists is gone for good. An alias read after that listing must not name it (2); a replica read after it must
  not report it loaded (3).
- The driver writes the store's target at most once per action and, after each, waits until a reading of the
  target that began after it has completed (``observed_after``). So at most one target write falls inside a
  reading (a reading whose two alias reads differ is torn and read again), and two readings that show the same
  target saw no other target between them: a replica read between them was read while the store named that
  target, and is judged against it (4). A replica's window starts when the checker first saw the target, or
  when the replica became ready, whichever is later.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from vitserve.benchmarks.chaos_fleet import Replica
from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.errors import ModelNotFound

CHECK_INTERVAL_S = 0.3
GATED = "production"  # the alias every replica follows (its default model is the bare name)
_LOADED_SAMPLE = re.compile(r"^vitserve_model_loaded\{(?P<labels>[^}]*)\} ")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Target:
    """What the store says every replica serves, or what one replica serves."""

    production: int | None
    canary: tuple[int, float] | None = None  # (version, weight in percent)

    def versions(self) -> set[int]:
        return {v for v in (self.production, self.canary[0] if self.canary else None) if v is not None}

    def __str__(self) -> str:
        canary = f" + canary {self.canary[0]} at {self.canary[1]:g} %" if self.canary else ""
        return f"{self.production}{canary}"


@dataclass
class TargetReading:
    aliases: dict[str, int]
    target: Target
    started: float
    ended: float


@dataclass
class StoreReading:
    numbers: frozenset[int]
    gone: frozenset[int]  # at or below the highest number ever listed, and no longer listed
    target: TargetReading


@dataclass
class ReplicaReading:
    replica: int
    state: Target  # the serving version and the canary split
    loaded: set[int]  # reported loaded by GET /models/{name} or the vitserve_model_loaded gauge
    sync: dict[str, Any]
    started: float
    ended: float


@dataclass
class Change:
    """One target of the store, from the reading that first showed it until one showed another."""

    target: Target
    seen_at: float
    ended_at: float | None = None
    converged_s: dict[int, float] = field(default_factory=dict)  # replica → s from max(seen_at, its ready)
    late: set[int] = field(default_factory=set)


class Checker:
    def __init__(self, store: ModelStore, name: str, replicas: list[Replica], ledger: Ledger, bound_s: float) -> None:
        self.store, self.name, self.replicas, self.ledger, self.bound_s = store, name, replicas, ledger, bound_s
        self.highest = 0
        self.reading: StoreReading | None = None  # the last complete one: what the driver chooses from
        self.replica_readings: dict[int, ReplicaReading] = {}
        self.target_read_started = float("-inf")  # start of the last complete reading of the target
        self.changes: list[Change] = []
        self.failures: Counter[str] = Counter()  # readings that failed, by why
        self.ticks = 0
        self.loaded_gauge_seen = False
        self._reported: set[tuple[Any, ...]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a restarted replica never meets a stale connection
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            while not stop.is_set():
                await self.tick(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_INTERVAL_S)

    async def tick(self, client: httpx.AsyncClient) -> None:
        self._check_exits()
        before = await self._read_store()
        if before is None:
            return
        live = [r for r in self.replicas if r.up]
        readings = await asyncio.gather(*(self._read_replica(client, r) for r in live))
        after = await self._read_target(before.numbers, before.gone)
        same_target = after is not None and after.target == before.target.target
        for replica, reading in zip(live, readings, strict=True):
            if reading is None:
                continue
            self.replica_readings[replica.index] = reading
            self._check_deleted(before, reading)
            self._check_pins(reading)
            if same_target:
                self._check_convergence(before, replica, reading)
        self.ticks += 1

    async def observed_after(self, t: float, timeout_s: float = 120.0) -> None:
        """Wait until a reading of the store's target that began after ``t`` has completed."""
        deadline = time.monotonic() + timeout_s
        while self.target_read_started <= t:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the checker read no store target for {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    def settled(self) -> bool | None:
        """True once every replica is up and serves the store's target; None while that can still happen (a
        replica's window is open); False once every window has passed without it."""
        if not self.changes:
            return None
        change = self.changes[-1]
        if all(r.up and r.index in change.converged_s for r in self.replicas):
            return True
        if any(not r.up for r in self.replicas):
            return None
        starts = [max(change.seen_at, r.ready_since or 0.0) for r in self.replicas]
        return None if time.monotonic() < max(starts) + self.bound_s + 2 * CHECK_INTERVAL_S else False

    # ----- readings ----------------------------------------------------------------------------------------

    async def _read_store(self) -> StoreReading | None:
        try:
            numbers = await asyncio.to_thread(self._versions)
        except (StoreError, OSError) as err:
            self.failures[f"store versions: {type(err).__name__}"] += 1
            return None
        self.highest = max(self.highest, *numbers, 0)
        gone = frozenset(range(1, self.highest + 1)) - numbers
        target = await self._read_target(numbers, gone)
        if target is None:
            return None
        self.reading = StoreReading(numbers, gone, target)
        return self.reading

    def _versions(self) -> frozenset[int]:
        for _ in range(4):
            with contextlib.suppress(ModelNotFound):  # a version removed between the listing and its card
                return frozenset(card.version for card in self.store.versions(self.name))
        return frozenset(card.version for card in self.store.versions(self.name))

    async def _read_target(self, numbers: frozenset[int], gone: frozenset[int]) -> TargetReading | None:
        for _ in range(5):
            started = time.monotonic()
            try:
                first, canary, second = await asyncio.to_thread(self._target_files)
            except (StoreError, OSError) as err:
                self.failures[f"store aliases: {type(err).__name__}"] += 1
                return None
            if first != second:
                continue  # an alias moved while the canary was read: torn, read again
            reading = TargetReading(first, Target(first.get(GATED), canary), started, time.monotonic())
            self.target_read_started = started
            self._check_aliases(reading, numbers, gone)
            self._follow(reading)
            return reading
        self.failures["store aliases: torn five times"] += 1
        return None

    def _target_files(self) -> tuple[dict[str, int], tuple[int, float] | None, dict[str, int]]:
        first = self.store.aliases(self.name)
        canary = self.store.canary(self.name, GATED)
        return first, (canary.version, canary.weight) if canary else None, self.store.aliases(self.name)

    async def _read_replica(self, client: httpx.AsyncClient, replica: Replica) -> ReplicaReading | None:
        started, incarnation = time.monotonic(), replica.incarnation
        try:
            info = await client.get(f"{replica.url}/models/{self.name}")
            metrics = await client.get(f"{replica.url}/metrics")
        except httpx.HTTPError as err:
            self._failed_reading(replica, started, type(err).__name__, "")
            return None
        if info.status_code != 200:
            self._failed_reading(replica, started, f"GET /models/{self.name} {info.status_code}", info.text)
            return None
        ended = time.monotonic()
        if replica.incarnation != incarnation or replica.ready_since is None or replica.ready_since > started:
            return None  # it went down (or came back) during the reading
        body = info.json()
        from_gauge = _loaded_versions(metrics.text, self.name)
        self.loaded_gauge_seen |= bool(from_gauge)
        split = body.get("canary")
        state = Target(body["serving_version"], (split["canary_version"], split["weight"]) if split else None)
        loaded = {v["version"] for v in body["versions"] if v["loaded"]} | from_gauge
        return ReplicaReading(replica.index, state, loaded, body.get("sync") or {}, started, ended)

    def _failed_reading(self, replica: Replica, started: float, why: str, body: str) -> None:
        self.failures[f"replica: {why}"] += 1
        if replica.down_during(started, time.monotonic()):
            return
        if why.startswith("GET") and " 5" in why and self._first(("read", replica.index, why)):
            self.ledger.violate("0 error", f"replica {replica.index}: {why}", body=body[:1000])

    # ----- invariants --------------------------------------------------------------------------------------

    def _check_exits(self) -> None:
        for replica in self.replicas:
            status = replica.exited()
            if status is not None:
                tail = replica.log_tail()
                replica.mark_down(self.ledger, f"exited by itself with {status}")
                self.ledger.violate("0 error", f"replica {replica.index} exited by itself ({status})", log_tail=tail)

    def _check_aliases(self, reading: TargetReading, numbers: frozenset[int], gone: frozenset[int]) -> None:
        named = dict(reading.aliases)
        if reading.target.canary is not None:
            named[f"{GATED}'s canary"] = reading.target.canary[0]
        for alias, version in sorted(named.items()):
            if version in gone and self._first(("2", alias, version)):
                self.ledger.violate(
                    "2 alias",
                    f"{self.name}@{alias} names {self.name}:{version}, which the store no longer has",
                    aliases=reading.aliases,
                    canary=reading.target.canary,
                    versions=sorted(numbers),
                )

    def _check_deleted(self, store: StoreReading, reading: ReplicaReading) -> None:
        replica = self.replicas[reading.replica]
        for version in sorted(reading.loaded & store.gone):
            if self._first(("3", reading.replica, replica.incarnation, version)):
                self.ledger.violate(
                    "3 deleted while loaded",
                    f"replica {reading.replica} reports {self.name}:{version} loaded; the store no longer has it",
                    loaded=sorted(reading.loaded),
                    versions=sorted(store.numbers),
                    leases={lease.replica: lease.holds for lease in self.store.leases.all()},
                )

    def _check_pins(self, reading: ReplicaReading) -> None:
        for pin in self.ledger.pins:
            if pin.replica != reading.replica or not pin.held_throughout(reading.started, reading.ended):
                continue
            if pin.version not in reading.loaded and self._first(("5", id(pin))):
                self.ledger.violate(
                    "5 pin",
                    f"{self.name}:{pin.version}, loaded explicitly on replica {pin.replica} at "
                    f"{self.ledger.at_s(pin.since):.2f} s, is no longer loaded there; no unload was sent",
                    serving=str(reading.state),
                    loaded=sorted(reading.loaded),
                )

    def _check_convergence(self, store: StoreReading, replica: Replica, reading: ReplicaReading) -> None:
        change = self.changes[-1]
        if change.target.production is None or change.target.versions() & store.gone:
            return  # a dangling target: reported as (2); no replica can serve it
        start = max(change.seen_at, replica.ready_since or change.seen_at)
        if reading.state == change.target:
            change.converged_s.setdefault(reading.replica, round(max(0.0, reading.ended - start), 2))
        elif reading.started > start + self.bound_s and reading.replica not in change.late:
            change.late.add(reading.replica)
            self.ledger.violate(
                "4 convergence",
                f"replica {reading.replica} serves {reading.state}, not the store's {change.target}, "
                f"{reading.started - start:.1f} s after the store named it (bound {self.bound_s:g} s)",
                sync=reading.sync,
                loaded=sorted(reading.loaded),
            )

    def _follow(self, reading: TargetReading) -> None:
        if self.changes and self.changes[-1].target == reading.target:
            return
        if self.changes:
            self.changes[-1].ended_at = reading.ended
        self.changes.append(Change(reading.target, seen_at=reading.ended))
        self.ledger.event(f"store target now {reading.target}")

    def _first(self, key: tuple[Any, ...]) -> bool:
        """True the first time ``key`` is seen: a lasting violation is reported once."""
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    # ----- summary -----------------------------------------------------------------------------------------

    def convergence(self) -> dict[str, Any]:
        """Per change, the slowest replica's convergence; their median and maximum, and the slowest change."""
        measured = [c for c in self.changes if c.converged_s]
        slowest = [max(c.converged_s.values()) for c in measured]
        everyone = [c for c in measured if len(c.converged_s) == len(self.replicas)]
        worst = max(measured, key=lambda c: max(c.converged_s.values()), default=None)
        return {
            "changes": len(self.changes),
            "all_replicas_converged": len(everyone),
            "superseded_or_cut_short": len(self.changes) - len(everyone),
            "slowest_replica_p50_s": round(statistics.median(slowest), 2) if slowest else None,
            "slowest_replica_max_s": max(slowest, default=None),
            "slowest_change": None
            if worst is None
            else {
                "target": str(worst.target),
                "at_s": self.ledger.at_s(worst.seen_at),
                "replicas_s": worst.converged_s,
            },
            "late": sum(len(c.late) for c in self.changes),
        }


def _loaded_versions(metrics: str, name: str) -> set[int]:
    """Versions of ``name`` in the ``vitserve_model_loaded`` gauge of a Prometheus text page."""
    versions = set()
    for line in metrics.splitlines():
        match = _LOADED_SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group("labels")))
            if labels.get("model") == name and labels.get("version", "").isdigit():
                versions.add(int(labels["version"]))
    return versions
