"""The chaos test's judgements, on a fake store and replicas answered by ``httpx.MockTransport``: each invariant is
reported when broken (once), and not when a reading could not tell (a target that moved during it, a replica
that was down, a pin that ended meanwhile)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from vitserve.benchmarks.chaos_checker import Checker, Target
from vitserve.benchmarks.chaos_fleet import Replica
from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.benchmarks.chaos_load import Load, Sent

NAME = "chaos-vit"


class FakeStore:
    """The store calls the checker makes; ``on_alias_read(n)`` runs before the n-th read of the alias table."""

    def __init__(self) -> None:
        self.numbers = {1, 2, 3}
        self.table = {"production": 1}
        self.canary_version: tuple[int, float] | None = None
        self.alias_reads = 0
        self.on_alias_read: Callable[[int], None] = lambda n: None
        self.leases = SimpleNamespace(all=lambda: [])

    def versions(self, name: str) -> list[Any]:
        return [SimpleNamespace(version=v) for v in sorted(self.numbers)]

    def aliases(self, name: str) -> dict[str, int]:
        self.alias_reads += 1
        self.on_alias_read(self.alias_reads)
        return dict(self.table)

    def canary(self, name: str, alias: str) -> Any:
        return None if self.canary_version is None else SimpleNamespace(version=self.canary_version[0], weight=20.0)


class Fleet:
    """Three replicas that are up, and what each one answers."""

    def __init__(self, store: FakeStore, tmp_path: Path) -> None:
        self.store = store
        self.replicas = [Replica(i, tmp_path, NAME, tmp_path) for i in range(3)]
        long_ago = time.monotonic() - 100
        for replica in self.replicas:
            replica.ready_since = long_ago
            replica.down = [(long_ago - 10, long_ago)]
        self.serving = {i: Target(1) for i in range(3)}
        self.loaded: dict[int, set[int]] = {i: {1} for i in range(3)}
        self.gauge: dict[int, set[int]] = {i: {1} for i in range(3)}

    def handler(self, request: httpx.Request) -> httpx.Response:
        i = next(r.index for r in self.replicas if r.port == request.url.port)
        if request.url.path == "/metrics":
            lines = [f'vitserve_model_loaded{{model="{NAME}",version="{v}"}} 0.0' for v in sorted(self.gauge[i])]
            return httpx.Response(200, text="\n".join(lines) + "\n")
        state = self.serving[i]
        split = None if state.canary is None else {"canary_version": state.canary[0], "weight": state.canary[1]}
        versions = [{"version": v, "loaded": v in self.loaded[i]} for v in sorted(self.store.numbers)]
        body = {"serving_version": state.production, "canary": split, "versions": versions, "sync": {}}
        return httpx.Response(200, json=body)


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def fleet(fake_store: FakeStore, tmp_path: Path) -> Fleet:
    return Fleet(fake_store, tmp_path)


def ticks(checker: Checker, fleet: Fleet, count: int = 1) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fleet.handler)) as client:
            for _ in range(count):
                await checker.tick(client)

    asyncio.run(run())


def checker_for(store: FakeStore, fleet: Fleet, bound_s: float = 30.0) -> tuple[Checker, Ledger]:
    ledger = Ledger()
    return Checker(store, NAME, fleet.replicas, ledger, bound_s), ledger  # type: ignore[arg-type]


def invariants(ledger: Ledger) -> list[str]:
    return [v.invariant for v in ledger.violations]


def test_a_fleet_that_follows_the_store_breaks_nothing(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet)
    ticks(checker, fleet, 2)
    assert ledger.violations == []
    assert checker.changes[-1].target == Target(1) and set(checker.changes[-1].converged_s) == {0, 1, 2}
    assert checker.loaded_gauge_seen


def test_an_alias_naming_a_removed_version_is_reported_once(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet)
    ticks(checker, fleet)
    store.numbers, store.table = {1, 3}, {"production": 1, "staging": 2}
    ticks(checker, fleet, 3)
    assert invariants(ledger) == ["2 alias"]
    assert "chaos-vit@staging names chaos-vit:2" in ledger.violations[0].what


def test_a_version_not_yet_listed_is_not_a_removed_one(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    """A publish that names an alias lands between the listing and the alias read: 4 is new, not gone."""
    checker, ledger = checker_for(store, fleet)
    store.on_alias_read = lambda n: store.table.update(staging=4) if n == 1 else None
    ticks(checker, fleet)
    assert ledger.violations == []


def test_a_replica_holding_a_removed_version_is_reported(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet)
    fleet.gauge[2] = {1, 2}
    ticks(checker, fleet)
    assert ledger.violations == []
    store.numbers = {1, 3}  # GET /models no longer lists 2: only the gauge says it is loaded
    ticks(checker, fleet, 2)
    assert (
        invariants(ledger) == ["3 deleted while loaded"]
        and "replica 2 reports chaos-vit:2" in ledger.violations[0].what
    )


def test_a_pin_must_stay_until_its_unload_was_sent(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet)
    now = time.monotonic()
    ledger.pin(0, 3, since=now - 5)  # dropped below: a violation
    ledger.pin(1, 3, since=now - 5)
    ledger.unpin(1, 3, at=now - 1)  # unloaded on purpose
    ledger.pin(2, 2, since=now + 60)  # its 200 arrives after this reading
    ticks(checker, fleet)
    assert (
        invariants(ledger) == ["5 pin"] and "chaos-vit:3, loaded explicitly on replica 0" in ledger.violations[0].what
    )


def test_a_replica_that_does_not_converge_within_the_bound_is_late(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet, bound_s=0.3)
    ticks(checker, fleet)
    store.table = {"production": 2}
    store.canary_version = (3, 20.0)
    fleet.serving[0] = fleet.serving[1] = Target(2, (3, 20.0))
    ticks(checker, fleet)
    assert ledger.violations == []  # within the bound
    time.sleep(0.4)
    ticks(checker, fleet, 2)
    assert invariants(ledger) == ["4 convergence"]
    assert "replica 2 serves 1, not the store's 2 + canary 3 at 20 %" in ledger.violations[0].what
    assert set(checker.changes[-1].converged_s) == {0, 1}


def test_a_replica_that_became_ready_late_has_its_own_window(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet, bound_s=0.3)
    ticks(checker, fleet)
    time.sleep(0.4)
    fleet.replicas[2].ready_since = time.monotonic()  # restarted: it has a bound from now
    fleet.serving[2] = Target(3)
    ticks(checker, fleet)
    assert ledger.violations == []


def test_no_convergence_judgement_when_the_target_moved_during_the_reading(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet, bound_s=0.0)
    ticks(checker, fleet)  # alias reads 1-4
    # The store moves between the tick's two readings (reads 5-6, then 7-8), and the replicas have followed at
    # once (a version already loaded): read against the first reading they look late, but nothing is judged.
    store.on_alias_read = lambda n: store.table.update(production=2) if n == 7 else None
    fleet.serving = {i: Target(2) for i in range(3)}
    ticks(checker, fleet)
    assert ledger.violations == []
    assert [c.target for c in checker.changes] == [Target(1), Target(2)]
    # The control: the same replicas against a target that held through the tick are late.
    store.table["production"] = 1
    ticks(checker, fleet, 2)
    assert invariants(ledger) == ["4 convergence"] * 3


def test_a_torn_alias_reading_is_read_again(fake_store: FakeStore, fleet: Fleet) -> None:
    store = fake_store
    checker, ledger = checker_for(store, fleet)
    store.on_alias_read = lambda n: store.table.update(production=2) if n == 2 else None
    fleet.serving = {i: Target(2) for i in range(3)}
    ticks(checker, fleet)
    assert [c.target for c in checker.changes] == [Target(2)] and ledger.violations == []


# ----- invariant 1: the load's judgement of each answer ------------------------------------------------------


@pytest.fixture
def load(fleet: Fleet) -> Load:
    return Load(NAME, fleet.replicas, Ledger(), [b""], seed=0)


def answer(version: int) -> str:
    return json.dumps({"model": {"name": NAME, "version": version}})


def error(code: str) -> str:
    return json.dumps({"error": {"code": code, "message": "..."}})


def test_answers_while_a_replica_is_down_are_allowed_only_as_503_or_no_answer(load: Load, fleet: Fleet) -> None:
    now = time.monotonic()
    fleet.replicas[0].down.append((now - 1, None))
    assert (
        load.judge(Sent(0, None, now - 2, now), None, "ConnectError: refused") == "allowed, replica down: ConnectError"
    )
    assert (
        load.judge(Sent(0, None, now - 2, now), 503, error("shutting_down"))
        == "allowed, replica down: 503 shutting_down"
    )
    assert load.judge(Sent(0, None, now - 2, now), 500, error("internal")) == "violation: 500 internal"
    assert load.judge(Sent(1, None, now - 2, now), 503, error("not_ready")) == "violation: 503 not_ready"
    assert load.judge(Sent(1, None, now - 2, now), 200, answer(1)) == "200"
    assert [v.invariant for v in load.ledger.violations] == ["1 request", "1 request"]


def test_pinned_answers(load: Load) -> None:
    now = time.monotonic()
    load.ledger.pin(0, 3, since=now - 10)
    load.ledger.pin(1, 3, since=now - 10)
    load.ledger.unpin(1, 3, at=now - 1)  # the unload was sent while the request was in flight
    assert load.judge(Sent(0, 3, now - 2, now), 200, answer(3)) == "200"
    assert load.judge(Sent(0, 3, now - 2, now), 200, answer(1)) == "violation: 200 from another version"
    assert load.judge(Sent(0, 3, now - 2, now), 404, error("model_not_loaded")) == "violation: 404 model_not_loaded"
    assert (
        load.judge(Sent(1, 3, now - 2, now), 404, error("model_not_found"))
        == "allowed, unpinned meanwhile: 404 model_not_found"
    )
    assert len(load.ledger.violations) == 2
