"""The chaos test's driver: a seeded random sequence of changes to the store and the fleet, one at a time.

Each step draws a kind of change (``KINDS``, by weight), then its subject (a version, a replica) from the
checker's last reading, and its door (the store's API, the CLI, a replica's admin API; ``chaos_calls``). One
seeded ``random.Random`` makes every draw, so a seed replays the same choices; what they meet (a delete that
races a lease renewal, a writer killed before or after its rename) depends on timing and may differ.

After each step the driver waits until the checker has read the store's target again (see
``chaos_checker``), then pauses a little. The races are the exception on purpose: a promotion, a canary or an
explicit load of a version at the same moment as its deletion or a gc. At most one replica is down at a time;
a replica killed or stopped is started again after a short delay, one that exits by itself at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from vitserve.benchmarks.chaos_calls import Calls, cli_command, writer_command
from vitserve.benchmarks.chaos_checker import GATED, Checker, StoreReading
from vitserve.benchmarks.chaos_fleet import Replica
from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.benchmarks.chaos_writer import DATA, LABELS, NAME, publish_version, random_state
from vitserve.benchmarks.engine_bench import QUICK_CONFIG
from vitserve.model_store import ModelStore
from vitserve.model_store.weights import write_weights

T = TypeVar("T")

KINDS = {  # kind → weight
    "promote": 12,
    "canary_start": 7,
    "canary_abort": 4,
    "canary_promote": 4,
    "pin": 9,
    "unpin": 6,
    "delete": 7,
    "gc": 4,
    "upload": 6,
    "killed_writer": 6,
    "race": 8,
    "replica_kill": 3,
    "replica_restart": 2,
}
PAUSE_S = (0.3, 1.5)  # between steps
RESTART_DELAY_S = (0.0, 2.0)
PUBLISH_STAGES = ("staging", "weights", "verified", "card", "claimed")  # model_store.staging's pause points
CANARY_WEIGHTS = (5.0, 20.0, 50.0)
RACES = {  # flavour → (claim, removal, at the same moment: else the removal right after the claim answered)
    "promote_vs_gc": ("promote", "gc", True),
    "promote_vs_delete": ("promote", "delete", True),
    "canary_vs_delete": ("canary", "delete", True),
    "pin_vs_delete": ("pin", "delete", True),
    "pin_then_delete": ("pin", "delete", False),  # a pin must be leased by the time its 200 is sent
}
MAX_VERSIONS = 12  # beyond, an upload is a gc instead: every version costs each replica an export to load it


class Driver:
    def __init__(
        self, store: ModelStore, replicas: list[Replica], ledger: Ledger, checker: Checker, calls: Calls, seed: int
    ) -> None:
        self.store, self.replicas, self.ledger, self.checker, self.calls = store, replicas, ledger, checker, calls
        self.rng = random.Random(seed)
        self.next_seed = seed * 1000  # the weights of each new version
        self.restarting: dict[int, asyncio.Task[None]] = {}
        self.steps = 0

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            self._revive()
            kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            await getattr(self, kind)()
            self.steps += 1
            await self.checker.observed_after(time.monotonic())
            await asyncio.sleep(self.rng.uniform(*PAUSE_S))

    async def finish(self) -> None:
        """Wait for every replica to be up again."""
        self._revive()
        await asyncio.gather(*list(self.restarting.values()))

    # ----- the store's target ------------------------------------------------------------------------------

    async def promote(self) -> None:
        version = self._choose(self._reading.numbers - {self._reading.target.target.production})
        via = self.rng.choice(("store", "cli", "admin"))
        if version is None:
            return self.ledger.change(f"promote/{via}", "skipped: no other version")
        kind = f"promote/{via}"
        if via == "store":
            await self.calls.store_api(kind, f"{NAME}:{version}", lambda: self._set_production(version))
        elif via == "cli":
            await self.calls.cli(kind, "promote", NAME, str(version), "--force")
        else:
            await self._admin(kind, f"models/{NAME}/aliases/{GATED}", json={"version": version, "force": True})

    async def canary_start(self) -> None:
        version = self._choose(self._reading.numbers - {self._reading.target.target.production})
        weight = self.rng.choice(CANARY_WEIGHTS)
        via = self.rng.choice(("store", "cli", "admin"))
        kind = f"canary_start/{via}"
        if version is None:
            return self.ledger.change(kind, "skipped: no other version")
        if via == "store":
            set_canary = functools.partial(self.store.set_canary, NAME, GATED, version, weight)
            await self.calls.store_api(kind, f"{NAME}:{version} at {weight:g} %", set_canary)
        elif via == "cli":
            await self.calls.cli(kind, "canary", NAME, str(version), "--weight", f"{weight:g}")
        else:
            await self._admin(
                kind, f"models/{NAME}/aliases/{GATED}/canary", json={"version": version, "weight": weight}
            )

    async def canary_abort(self) -> None:
        await self._end_canary(promote=False)

    async def canary_promote(self) -> None:
        await self._end_canary(promote=True)

    async def _end_canary(self, *, promote: bool) -> None:
        via = self.rng.choice(("store", "cli", "admin"))
        kind = f"canary_{'promote' if promote else 'abort'}/{via}"
        if via == "store":
            end = functools.partial(self.store.end_canary, NAME, GATED, promote=promote, force=True)
            await self.calls.store_api(kind, NAME, end)
        elif via == "cli":
            await self.calls.cli(kind, *(("promote", NAME, "--force") if promote else ("abort", NAME)))
        else:
            path = f"models/{NAME}/aliases/{GATED}/canary/{'promote' if promote else 'abort'}"
            await self._admin(kind, path, **({"json": {"force": True}} if promote else {}))

    # ----- explicit loads ----------------------------------------------------------------------------------

    async def pin(self) -> None:
        replica = self._choose_replica()
        if replica is None:
            return self.ledger.change("pin/admin", "skipped: no live replica")
        pinned = {p.version for p in self.ledger.active_pins(replica.index)}
        version = self._choose(self._reading.numbers - pinned)
        if version is None:
            return self.ledger.change("pin/admin", "skipped: every version pinned")
        await self._pin(replica, version, "pin/admin")

    async def _pin(self, replica: Replica, version: int, kind: str) -> None:
        reading = self.checker.replica_readings.get(replica.index)
        held = reading is not None and version in reading.loaded
        started = time.monotonic()
        response = await self.calls.admin(kind, replica, f"models/{NAME}:{version}/load")
        if response is not None and response.status_code == 200:
            self.ledger.pin(replica.index, version, time.monotonic())
            if not held:
                self.ledger.load_times_s.append(round(time.monotonic() - started, 2))

    async def unpin(self) -> None:
        pins = [pin for replica in self.replicas if replica.up for pin in self.ledger.active_pins(replica.index)]
        if not pins:
            return self.ledger.change("unpin/admin", "skipped: no pin")
        pin = self.rng.choice(pins)
        self.ledger.unpin(pin.replica, pin.version, time.monotonic())  # from now on it may go
        await self.calls.admin("unpin/admin", self.replicas[pin.replica], f"models/{NAME}:{pin.version}/unload")

    # ----- removals and uploads ----------------------------------------------------------------------------

    async def delete(self) -> None:
        version = self._choose(self._reading.numbers)
        via = self.rng.choice(("store", "cli"))
        if version is None:
            return self.ledger.change(f"delete/{via}", "skipped: no version")
        await self._delete(version, via)

    async def _delete(self, version: int, via: str, kind: str | None = None) -> None:
        kind = kind or f"delete/{via}"
        if via == "cli":
            await self.calls.cli(kind, "delete", f"{NAME}:{version}")
        else:
            await self.calls.store_api(kind, f"{NAME}:{version}", lambda: self.store.delete(f"{NAME}:{version}"))

    async def gc(self) -> None:
        via = self.rng.choice(("store", "cli"))
        if via == "cli":
            await self.calls.cli("gc/cli", "gc", NAME)
        else:
            await self.calls.store_api("gc/store", NAME, lambda: self.store.gc(NAME))

    async def upload(self) -> None:
        if len(self._reading.numbers) >= MAX_VERSIONS:
            return await self.gc()
        seed, alias = self._new_seed(), self.rng.choice((None, None, "staging", GATED))
        aliases = () if alias is None else (alias,)
        via = self.rng.choice(("store", "admin", "writer"))
        kind = f"upload/{via}" + (f"@{alias}" if alias else "")
        if via == "store":
            await self.calls.store_api(kind, f"seed {seed}", lambda: publish_version(self.store, seed, aliases))
        elif via == "writer":
            await self.calls.writer(kind, seed, aliases)
        else:
            checkpoint = await asyncio.to_thread(_checkpoint_bytes, seed)
            fields: dict[str, Any] = {"config": QUICK_CONFIG.to_json(), "data": json.dumps(DATA.to_dict())}
            fields |= {"labels": json.dumps(LABELS), "description": f"chaos seed {seed}", "alias": list(aliases)}
            files = {"checkpoint": ("chaos.ckpt", checkpoint, "application/octet-stream")}
            await self._admin(kind, f"models/{NAME}/versions", data=fields, files=files)

    async def killed_writer(self) -> None:
        """A store writer killed mid-write (a publish at one of its stages, or a CLI after a random delay);
        half the time it is run again to its end."""
        what = self.rng.choice(("publish", "promote", "canary", "gc"))
        if what == "publish":
            stage = self.rng.choice((*PUBLISH_STAGES, None))
            aliases = self.rng.choice(((), (GATED,)))
            seed, delay = self._new_seed(), self.rng.uniform(0.5, 4.0)
            command = writer_command(self.store, seed, aliases)
            await self.calls.killed("killed_writer/publish", command, pause_at=stage, kill_after_s=delay)
            again = self.rng.random() < 0.5
            await self.checker.observed_after(time.monotonic())
            if again:
                await self.calls.writer("killed_writer/publish run again", seed, aliases)
            return
        version = self._choose(self._reading.numbers) or 1
        args = {
            "promote": ("promote", NAME, str(version), "--force"),
            "canary": ("canary", NAME, str(version), "--weight", "20"),
            "gc": ("gc", NAME),
        }[what]
        delay, again = self.rng.uniform(0.1, 1.5), self.rng.random() < 0.5
        await self.calls.killed(
            f"killed_writer/{what}", cli_command(self.store, *args), pause_at=None, kill_after_s=delay
        )
        await self.checker.observed_after(time.monotonic())
        if again:
            await self.calls.cli(f"killed_writer/{what} run again", *args)

    # ----- races -------------------------------------------------------------------------------------------

    async def race(self) -> None:
        """A version no alias, canary, replica or pin holds, promoted (or made a canary, or loaded explicitly)
        at the same moment as it is deleted (or gc runs), or deleted right after its explicit load answered.
        Without such a version, one is published first (and, for gc, which keeps the latest, one more)."""
        flavour = self.rng.choice(sorted(RACES))
        claim, removal, at_once = RACES[flavour]
        version = self._choose(self._unheld(keep_latest=removal == "gc"))
        replica = self._choose_replica()
        if replica is None:
            return self.ledger.change(f"race/{flavour}", "skipped: no live replica")
        if version is None:
            version = await self._publish_for_race(f"race/{flavour} (publish first)", 2 if removal == "gc" else 1)
        if version is None:
            return
        first = self._race_claim(claim, f"race/{flavour} ({claim})", version, replica)
        second = self._race_removal(removal, f"race/{flavour} ({removal})", version)
        if at_once:
            await asyncio.gather(first, second)
        else:
            await first
            await second

    async def _publish_for_race(self, kind: str, count: int) -> int | None:
        """Publish ``count`` versions; the number of the first."""
        seeds = [self._new_seed() for _ in range(count)]
        cards = [
            await self.calls.store_api(kind, f"seed {seed}", functools.partial(publish_version, self.store, seed))
            for seed in seeds
        ]
        return cards[0].version if cards[0] is not None else None

    async def _race_claim(self, claim: str, kind: str, version: int, replica: Replica) -> None:
        if claim == "pin":
            await self._pin(replica, version, kind)
        elif claim == "canary":
            set_canary = functools.partial(self.store.set_canary, NAME, GATED, version, 20.0)
            await self.calls.store_api(kind, f"{NAME}:{version}", set_canary)
        else:
            await self.calls.store_api(kind, f"{NAME}:{version}", functools.partial(self._set_production, version))

    async def _race_removal(self, removal: str, kind: str, version: int) -> None:
        if removal == "gc":
            await self.calls.store_api(kind, NAME, functools.partial(self.store.gc, NAME))
        else:
            await self._delete(version, "store", kind)

    def _unheld(self, *, keep_latest: bool) -> set[int]:
        """Versions that no alias, canary, pin or replica (as last read) holds; not the latest with
        ``keep_latest`` (gc keeps it)."""
        reading = self._reading
        held = set(reading.target.aliases.values()) | reading.target.target.versions()
        if keep_latest:
            held.add(max(reading.numbers, default=0))
        for replica_reading in self.checker.replica_readings.values():
            held |= replica_reading.loaded
        held |= {pin.version for pin in self.ledger.pins if pin.until is None}
        return set(reading.numbers) - held

    # ----- replicas ----------------------------------------------------------------------------------------

    async def replica_kill(self) -> None:
        await self._bounce(hard=True)

    async def replica_restart(self) -> None:
        await self._bounce(hard=False)

    async def _bounce(self, *, hard: bool) -> None:
        kind = "replica/kill -9" if hard else "replica/SIGTERM"
        replica, delay = self.rng.choice(self.replicas), self.rng.uniform(*RESTART_DELAY_S)
        if not all(r.up for r in self.replicas):  # one down at a time: the others carry the load
            return self.ledger.change(kind, "skipped: a replica is down")
        await replica.stop(self.ledger, hard=hard)
        self.ledger.change(kind, "ok", f"replica {replica.index}, started again in {delay:.1f} s")
        self.restarting[replica.index] = asyncio.create_task(self._restart(replica, delay))

    async def _restart(self, replica: Replica, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await asyncio.to_thread(replica.start)
        if await replica.wait_ready():
            self.ledger.event(f"replica {replica.index} ready again (process {replica.incarnation})")
        else:
            error = replica.server.error if replica.server else None
            self.ledger.violate("0 error", f"replica {replica.index} did not start again", error=error)
        self.restarting.pop(replica.index, None)

    def _revive(self) -> None:
        """Start again a replica that is down and not being started (one that exited by itself)."""
        for replica in self.replicas:
            if not replica.up and replica.index not in self.restarting:
                self.restarting[replica.index] = asyncio.create_task(self._restart(replica, 0.0))

    # ----- helpers -----------------------------------------------------------------------------------------

    @property
    def _reading(self) -> StoreReading:
        assert self.checker.reading is not None, "the checker has not read the store yet"
        return self.checker.reading

    def _choose(self, options: Iterable[int]) -> int | None:
        ordered = sorted(options)
        return self.rng.choice(ordered) if ordered else None

    def _choose_replica(self) -> Replica | None:
        live = [replica for replica in self.replicas if replica.up]
        return self.rng.choice(live) if live else None

    async def _admin(self, kind: str, path: str, **request: Any) -> None:
        replica = self._choose_replica()
        if replica is None:
            return self.ledger.change(kind, "skipped: no live replica")
        await self.calls.admin(kind, replica, path, **request)

    def _set_production(self, version: int) -> object:
        return self.store.set_alias(NAME, GATED, version, force=True)

    def _new_seed(self) -> int:
        self.next_seed += 1
        return self.next_seed


def _checkpoint_bytes(seed: int) -> bytes:
    """A MindSpore checkpoint of ``random_state(seed)``, as an admin upload sends it."""
    with tempfile.TemporaryDirectory(prefix="vitserve-chaos-") as tmp:
        path = Path(tmp) / "upload.ckpt"
        write_weights(random_state(seed), path)
        return path.read_bytes()
