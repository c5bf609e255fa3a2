"""The chaos test: three replicas under steady load while a seeded random driver changes the store and the fleet,
and a checker holds five invariants throughout (issue 22).

A real store in a temporary directory holds ``chaos-vit`` (the benchmarks' quick ViT, random weights), four
versions to begin with, production on 1. Three real ``vitserve serve`` processes on 127.0.0.1 follow it
(``chaos_fleet``: ONNX Runtime on the CPU, a poll every 0.2 s, a 3 s lease). Three clients send requests to
the replicas in turn (``chaos_load``). The driver (``chaos_driver``) applies, one at a time, promotions,
canaries (start, abort, promote), explicit loads and unloads through a replica's admin API (pins), deletes
(which the store may refuse: recorded), gc, uploads, store writers killed mid-write (a publish at a stage of its
own, a CLI promote, canary or gc after a random delay; then, half the time, run again), kill -9 and SIGTERM of a
replica and its restart, and races (a promotion, canary or explicit load of a version while it is deleted or
gc runs; a delete right after an explicit load answered), through the store's API, the CLI and the admin API.
The checker (``chaos_checker``) reads the store and each live replica's ``GET /models/{name}`` and ``/metrics``
every 0.3 s.

The invariants, and what each allows (each allowance follows from what the service documents):

1. **No good request fails.** Allowed: a 503 or no answer (refused, reset) from a replica while it is down,
   from the moment the driver decides to stop it until its new process answers ``/readyz`` 200 (a killed
   replica's clients see resets; a draining or starting one answers 503). A pinned request (``name:V``) may get
   404 ``model_not_loaded`` or ``model_not_found`` if its pin ended while it was in flight (the unload was sent,
   or the replica stopped): after an unload the version may be gone from the replica, and then legitimately
   deleted from the store. A pinned request answered by another version is a violation. Every other answer
   (a 5xx, a 504, a 404 for a version pinned throughout, an unpinned 404) is a violation, kept with its body.
2. **No alias or canary names a missing version.** Version numbers are never reused, so a number the store
   listed once and no longer lists is gone; an alias read after that listing must not name it.
3. **No version a live replica reports loaded is missing from the store** (``GET /models`` and the
   ``vitserve_model_loaded`` gauge, read after the store's listing).
4. **Every live replica converges.** Once the store names a target (production, and its canary with weight),
   every live replica serves it (``serving_version`` and ``canary`` of ``GET /models``) within
   ``convergence_bound_s`` of the checker first seeing it, or of the replica becoming ready if it was down. The
   bound is a poll plus load time: up to two loads (a new stable version and a new canary: each an ONNX export,
   or the wait for another replica's, a session and a warm-up), queued behind an explicit load, plus a retry,
   on a small shared machine. A target that names a missing version is (2)'s violation, not this one's.
5. **A pin stays until it is unloaded.** A version explicitly loaded on a replica (its 200 arrived) is loaded
   there in every reading until the driver sends its unload, or stops the replica (a new process starts
   without pins). The driver's explicit loads are pins only (``serve=false``): a ``serve=true`` load moves one
   replica off the store's target on purpose, which (4) would count against it.

A replica that exits by itself, a store call that fails in a way no contract documents (see ``chaos_calls``),
or a replica that does not start again are violations too (``0 error``). The checker is written to have no
false positives; its reasoning about timing is in ``chaos_checker``.

``vitserve bench --chaos MINUTES [--seed N]`` runs it and prints the report (chaos.md; chaos.json with every
event); ``tests/e2e/test_chaos_e2e.py`` runs a short one and asserts no violation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from vitserve.benchmarks.chaos_calls import Calls
from vitserve.benchmarks.chaos_checker import GATED, Checker
from vitserve.benchmarks.chaos_driver import Driver
from vitserve.benchmarks.chaos_fleet import LEASE_TTL_S, POLL_S, REPLICA_SETTINGS, Replica
from vitserve.benchmarks.chaos_ledger import Ledger
from vitserve.benchmarks.chaos_load import CLIENTS, Load
from vitserve.benchmarks.chaos_writer import NAME, publish_version
from vitserve.benchmarks.http_bench import realistic_jpegs
from vitserve.model_store import ModelStore

logger = logging.getLogger(__name__)

REPLICAS = 3
FIRST_VERSIONS = 4
CONVERGENCE_BOUND_S = 30.0  # see invariant 4; the fleet test's bound on the same kind of machine
SHOWN_PER_INVARIANT = 6  # violations of one invariant shown in full in chaos.md (all are in chaos.json)


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 1_000_000)


def run_chaos(
    out: Path, minutes: float, seed: int | None = None, *, bound_s: float = CONVERGENCE_BOUND_S
) -> dict[str, Any]:
    """Run the chaos test for ``minutes``; write chaos.json and chaos.md into ``out``; return the report."""
    seed = new_seed() if seed is None else seed
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    logger.info("chaos: seed %d, %.1f minutes; replica logs in %s", seed, minutes, out / "logs")
    with tempfile.TemporaryDirectory(prefix="vitserve-chaos-") as tmp:
        store = ModelStore(Path(tmp) / "store")
        report = asyncio.run(_chaos(store, out / "logs", minutes, seed, bound_s))
    (out / "chaos.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "chaos.md").write_text(render(report), encoding="utf-8")
    return report


async def _chaos(store: ModelStore, logdir: Path, minutes: float, seed: int, bound_s: float) -> dict[str, Any]:
    ledger = Ledger()
    for i in range(FIRST_VERSIONS):
        await asyncio.to_thread(publish_version, store, seed * 1000 - i, (GATED,) if i == 0 else ())
    replicas = [Replica(i, store.root, NAME, logdir) for i in range(REPLICAS)]
    try:
        await _start(replicas)
        images = await asyncio.to_thread(realistic_jpegs, (96, 72))
        checker = Checker(store, NAME, replicas, ledger, bound_s)
        load = Load(NAME, replicas, ledger, images, seed)
        async with httpx.AsyncClient() as http:
            driver = Driver(store, replicas, ledger, checker, Calls(store, ledger, http), seed)
            started = await _under_load(checker, load, driver, ledger, minutes)
        return report(seed, minutes, bound_s, ledger, checker, load, driver, started)
    finally:
        await asyncio.gather(*(asyncio.to_thread(replica.close) for replica in replicas))


async def _start(replicas: list[Replica]) -> None:
    """Start every replica at once (their start-ups overlap) and wait until each is ready."""
    for replica in replicas:
        replica.start()
    ready = await asyncio.gather(*(replica.wait_ready() for replica in replicas))
    failed = [replica for replica, ok in zip(replicas, ready, strict=True) if not ok]
    if failed:
        raise RuntimeError("; ".join(f"replica {r.index}: {r.server.error if r.server else ''}" for r in failed))


async def _under_load(checker: Checker, load: Load, driver: Driver, ledger: Ledger, minutes: float) -> float:
    """The checker and the load run from before the first change until every replica settled after the last."""
    stop_load, stop_checker = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(checker.run(stop_checker)), asyncio.create_task(load.run(stop_load))]
    try:
        await checker.observed_after(time.monotonic())
        ledger.begin()
        started = ledger.t0
        ledger.event("chaos begins")
        await driver.run(until=started + minutes * 60)
        ledger.event("chaos ends: waiting for every replica to be up and to serve the store's target")
        await driver.finish()
        give_up = time.monotonic() + checker.bound_s + 60.0
        while checker.settled() is None and time.monotonic() < give_up:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # a last reading of the settled fleet
        ledger.event("settled")
    finally:
        stop_load.set()
        stop_checker.set()
        await asyncio.gather(*tasks)
    return started


def report(
    seed: int,
    minutes: float,
    bound_s: float,
    ledger: Ledger,
    checker: Checker,
    load: Load,
    driver: Driver,
    started: float,
) -> dict[str, Any]:
    changes: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, outcome), count in sorted(ledger.changes.items()):
        changes[kind][outcome] = count
    requests: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, outcome), count in sorted(load.outcomes.items()):
        requests[kind][outcome] = count
    latencies = sorted(load.latencies_ms)
    by_invariant: dict[str, int] = defaultdict(int)
    for violation in ledger.violations:
        by_invariant[violation.invariant] += 1
    return {
        "seed": seed,
        "minutes": minutes,
        "ran_s": round(time.monotonic() - started, 1),
        "settings": {"replicas": REPLICAS, "clients": CLIENTS, "convergence_bound_s": bound_s, **REPLICA_SETTINGS},
        "steps": driver.steps,
        "changes": dict(changes),
        "requests": dict(requests),
        "latency_ms": _percentiles(latencies),
        "convergence": checker.convergence(),
        "explicit_load_s": _percentiles(sorted(ledger.load_times_s)),
        "checker": {
            "ticks": checker.ticks,
            "failed_readings": dict(checker.failures),
            "loaded_gauge_seen": checker.loaded_gauge_seen,
        },
        "violations_by_invariant": dict(sorted(by_invariant.items())),
        "violations": [dataclasses.asdict(v) for v in ledger.violations],
        "events": ledger.timeline(),
    }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return {"count": len(values), "p50": round(statistics.median(values), 2), "p99": round(p99, 2), "max": values[-1]}


def render(report: dict[str, Any]) -> str:
    """The report as Markdown: settings, changes by kind, requests by outcome, convergence, every violation."""
    conv, settings = report["convergence"], report["settings"]
    lines = [
        f"# Chaos: {settings['replicas']} replicas, {report['minutes']:g} minutes, seed {report['seed']}",
        "",
        f"Poll {POLL_S:g} s, lease TTL {LEASE_TTL_S:g} s, convergence bound {settings['convergence_bound_s']:g} s, "
        f"{settings['engine']} {settings['engine_precision']}, {settings['clients']} load clients; "
        f"{report['steps']} steps in {report['ran_s']:g} s (settling included).",
        "",
        f"**Violations: {len(report['violations'])}** "
        + (", ".join(f"{k}: {n}" for k, n in report["violations_by_invariant"].items()) or ""),
        "",
        "| change | outcomes |",
        "|---|---|",
        *[f"| {kind} | {_outcomes(o)} |" for kind, o in report["changes"].items()],
        "",
        "| requests | outcomes |",
        "|---|---|",
        *[f"| {kind} | {_outcomes(o)} |" for kind, o in report["requests"].items()],
        "",
        f"Answered requests: p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms.",
        "",
        f"Convergence: {conv['changes']} store targets, {conv['all_replicas_converged']} reached by every replica "
        f"({conv['superseded_or_cut_short']} superseded first or met a replica restarting); slowest replica per "
        f"target p50 {conv['slowest_replica_p50_s']} s, max {conv['slowest_replica_max_s']} s; late: {conv['late']}.",
        f"Slowest: {json.dumps(conv['slowest_change'])}.",
        f"Explicit loads of a version not yet held: {json.dumps(report['explicit_load_s'])} (s).",
        f"Checker: {report['checker']['ticks']} readings; failed readings {report['checker']['failed_readings']}; "
        f"loaded gauge seen: {report['checker']['loaded_gauge_seen']}.",
        "",
    ]
    shown: dict[str, int] = defaultdict(int)
    for violation in report["violations"]:
        invariant = violation["invariant"]
        shown[invariant] += 1
        if shown[invariant] > SHOWN_PER_INVARIANT:
            continue
        lines += [f"## [{invariant}] at {violation['at_s']} s: {violation['what']}", ""]
        lines += ["```", json.dumps(violation["context"], indent=1, default=str), "```", ""]
    for invariant, count in shown.items():
        if count > SHOWN_PER_INVARIANT:
            lines.append(f"[{invariant}]: {count - SHOWN_PER_INVARIANT} more in chaos.json.")
    return "\n".join(lines) + "\n"


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{outcome}: {count}" for outcome, count in outcomes.items())
