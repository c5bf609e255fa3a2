"""The protocol parity matrix (issue 21): the hostile corpus against each door, with the same outcome class on each.

Every case (one row of ``CASES``: a bomb in JSON and in binary form, a huge declared shape, more images than
allowed, Unicode digits in the model reference, a slow sender, a spoofed identity, a caller over its rate, the
body budget held, a flood of requests pinned to a canary with deadlines nothing meets) is sent through each door
of ``tests.service.doors`` (``POST /classify``, ``POST /v2/models/{name}/infer``, gRPC ``ModelInfer``) to an app
in-process (its gRPC server on 127.0.0.1), on the fake engine. For each cell:

- every hostile request gets the case's one expected class, and every honest request beside it is answered;
- no outcome falls outside the classes (a 500, INTERNAL, UNKNOWN: a bug), and no error message shows a server path;
- what a refusal asks the client to wait (429, 503) comes with its retry-after;
- the event loop (the app's and the test's) never lags more than 50 ms over its idle noise while the case runs: a
  ticker in the loop measures how late its sleeps wake. A cell late while the loop's own thread never ran that long
  between two ticks (the process waited for a CPU: a busy shared machine) is measured once more, on a new app.

The last test prints the matrix, checks that each case has one class across its doors, and bounds the growth of
the process's resident memory over the whole matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from tests.service.doors import (
    BAD_INPUT,
    CLASSES,
    DOORS,
    OK,
    RATE_LIMITED,
    TIMEOUT,
    TOO_LARGE,
    UNAVAILABLE,
    AccessLines,
    Door,
    Outcome,
    access_lines,
    leaks,
)
from tests.service.fakes import png
from tests.service.test_canary_guard import GUARDED, _wait_for_canary
from tests.service.test_v2_grpc import until
from vitserve.model_store import ModelStore

# A cell takes seconds; a bound turns a hang (an app that never shuts down, ...) into a failure with its stacks.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MAX_LAG_S = 0.05
MAX_RSS_GROWTH_MIB = 300
FLOOD = 200  # requests pinned to the canary with a deadline nothing meets, per door
HONEST = 80  # split-routed requests beside them: at weight 50 both sides pass the guard's minimum of 20


@dataclass
class Run:
    """What a case's requests came back with: ``hostile`` must all be the case's class, ``honest`` all ok;
    ``checks`` are facts of the case that must hold (the canary still split, ...)."""

    hostile: list[Outcome]
    honest: list[Outcome] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Env:
    client: httpx.AsyncClient
    app: FastAPI
    store: ModelStore


Prepared = Callable[[], Awaitable[Run]]


@dataclass(frozen=True)
class Case:
    """``prepare(door, env)`` builds the requests and sets the scene (outside the measurement), and returns what
    sends them; ``settings`` are the app's for this case; ``warm``: one request first, so that lazy set-up is
    not measured (off where every request counts against a rate)."""

    expected: str
    prepare: Callable[[Door, Env], Awaitable[Prepared]]
    settings: dict[str, Any] = field(default_factory=dict)
    warm: bool = True


def one(send: Callable[[], Awaitable[Outcome]]) -> Prepared:
    async def run() -> Run:
        return Run([await send()])

    return run


async def entries_bomb(door: Door, env: Env) -> Prepared:
    return one(door.entries_bomb())


async def elements_bomb(door: Door, env: Env) -> Prepared:
    return one(door.elements_bomb())


async def huge_shape(door: Door, env: Env) -> Prepared:
    return one(door.huge_shape())


async def one_image_too_many(door: Door, env: Env) -> Prepared:
    images = [png(i) for i in range(env.app.state.settings.max_images + 1)]
    return one(lambda: door.infer(images))


async def many_images(door: Door, env: Env) -> Prepared:
    images = [png(i % 256) for i in range(4 * env.app.state.settings.max_images)]
    return one(lambda: door.infer(images))


async def unicode_digits(door: Door, env: Env) -> Prepared:
    return one(lambda: door.infer([png(1)], version="²"))  # "²".isdigit() is true; int("²") raises


async def slow_sender(door: Door, env: Env) -> Prepared:
    release = asyncio.Event()
    send = door.silent(release)

    async def run() -> Run:
        try:
            late = await send()
        finally:
            release.set()
        return Run([late], [await door.infer([png(1)])])

    return run


async def spoofed_identity(door: Door, env: Env) -> Prepared:
    async def run() -> Run:
        claims = [f"203.0.113.{i}" for i in range(3)]  # a new address claimed each time: still one client
        outcomes = [await door.infer([png(i)], forwarded_for=claim) for i, claim in enumerate(claims)]
        return Run(outcomes[2:], outcomes[:2])

    return run


async def over_rate(door: Door, env: Env) -> Prepared:
    async def run() -> Run:
        outcomes = [await door.infer([png(i)]) for i in range(5)]
        return Run(outcomes[2:], outcomes[:2])

    return run


BUDGET = 64 * 1024


async def over_budget(door: Door, env: Env) -> Prepared:
    budget = env.app.state.body_budget
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"\0" * 1024
        await release.wait()
        yield b"\0" * (BUDGET - 1024)

    async def run() -> Run:
        headers = {"content-type": "image/png", "content-length": str(BUDGET)}
        holder = asyncio.create_task(env.client.post("/classify", content=trickle(), headers=headers))
        try:
            await until(lambda: budget.held == BUDGET)  # one body holds the whole budget from its Content-Length
            refused = await door.infer([png(1)])
        finally:
            release.set()
            await holder
        await until(lambda: budget.held == 0)
        return Run([refused], [await door.infer([png(2)])], {"the budget is given back": budget.held == 0})

    return run


async def canary_flood(door: Door, env: Env) -> Prepared:
    """GUARDED's canary at weight 50; the hostile requests pin its version with a 1 µs deadline."""
    env.store.set_canary("tiny", "production", 2, 50)
    await _wait_for_canary(env.client, present=True)

    async def waves(count: int, size: int, send: Callable[[], Awaitable[Outcome]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for start in range(0, count, size):
            outcomes += await asyncio.gather(*(send() for _ in range(min(size, count - start))))
        return outcomes

    # Eight at a time, on every door: well within the streams one gRPC connection may have (16; beyond, gRPC
    # refuses the stream itself: UNAVAILABLE, RST_STREAM), and the in-process client's own work (encoding, the
    # ASGI transport) runs on the measured loop too, so each request costs the loop about twice a server's share.
    at_once = 8

    async def run() -> Run:
        hostile = await waves(FLOOD, at_once, lambda: door.infer([png(1)], version="2", deadline_us=1))
        honest = await waves(HONEST, at_once, lambda: door.infer([png(1)]))
        await asyncio.sleep(0.3)  # six polls of the guard, each with both sides over its minimum
        info = (await env.client.get("/models/tiny")).json()
        stats = (info.get("canary") or {}).get("stats", {})
        sides = [stats.get(ref, {}) for ref in ("tiny:1", "tiny:2")]
        return Run(
            hostile,
            honest,
            {
                "the canary split is still in the store": env.store.canary("tiny", "production") is not None,
                "the guard aborted nothing": (info.get("sync") or {}).get("guard_abort") is None,
                "the guard judged (both sides over its minimum)": all(
                    s.get("requests", 0) >= GUARDED["canary_min_requests"] for s in sides
                ),
                "no error counted against either side": all(s.get("errors", 1) == 0 for s in sides),
            },
        )

    return run


FIXED_RATE = {"client_rate": 0.2, "client_burst": 2, "client_rates_fixed": True}

CASES: dict[str, Case] = {
    "bomb-of-entries-json": Case(TOO_LARGE, entries_bomb),
    "bomb-of-elements-binary": Case(TOO_LARGE, elements_bomb),
    "huge-declared-shape": Case(TOO_LARGE, huge_shape),
    "one-image-too-many": Case(TOO_LARGE, one_image_too_many),
    "four-times-the-images-allowed": Case(TOO_LARGE, many_images),
    "unicode-digits-in-version": Case(BAD_INPUT, unicode_digits),
    "slow-sender": Case(TIMEOUT, slow_sender, {"body_timeout_s": 0.5}),
    "spoofed-x-forwarded-for": Case(RATE_LIMITED, spoofed_identity, FIXED_RATE, warm=False),
    "over-the-request-rate": Case(RATE_LIMITED, over_rate, FIXED_RATE, warm=False),
    "over-the-body-budget": Case(UNAVAILABLE, over_budget, {"max_body_bytes": BUDGET, "max_bodies_bytes": BUDGET}),
    "client-deadline-flood-on-canary": Case(TIMEOUT, canary_flood, GUARDED),
}


# ----- measuring the loop and the memory ----------------------------------------------------------------------


def rss_mib() -> float:
    """This process's resident memory now (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class LagMeter:
    """A ticker in the running loop (the app's and the test's): how late each 5 ms sleep wakes (``max_lag_s``), the
    most CPU the loop's own thread used between two ticks (``max_busy_s``: work done on the loop, as opposed to the
    process waiting for a CPU or for the GIL), and the peak RSS."""

    TICK_S = 0.005

    def __init__(self) -> None:
        self.max_lag_s = self.max_busy_s = 0.0
        self.peak_rss_mib = rss_mib()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        ticks = 0
        while True:
            started, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.TICK_S)
            self.max_lag_s = max(self.max_lag_s, time.perf_counter() - started - self.TICK_S)
            self.max_busy_s = max(self.max_busy_s, time.thread_time() - cpu)
            ticks += 1
            if ticks % 10 == 0:
                self.peak_rss_mib = max(self.peak_rss_mib, rss_mib())

    @contextlib.asynccontextmanager
    async def measuring(self) -> AsyncIterator[LagMeter]:
        self._task = asyncio.create_task(self._tick())
        try:
            yield self
            await asyncio.sleep(0.02)  # the ticks after the end, in case its last step stalled
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak_rss_mib = max(self.peak_rss_mib, rss_mib())


async def idle_lag_s(seconds: float = 0.3) -> float:
    """The idle loop's own lag: this machine's scheduling noise, not the app's."""
    meter = LagMeter()
    async with meter.measuring():
        await asyncio.sleep(seconds)
    return meter.max_lag_s


@dataclass
class Ledger:
    """The matrix as it runs: each cell's class, lag and RSS, against the RSS before the first cell."""

    rss_before_mib: float
    cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger(rss_mib())


@pytest.fixture
def access() -> Iterator[AccessLines]:
    with access_lines() as lines:
        yield lines


# ----- the matrix ----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One case sent through one door: what came back, and how the loop fared while it ran."""

    run: Run
    door: Door
    meter: LagMeter
    noise_s: float  # the idle loop's lag just before: this machine's scheduling noise

    @property
    def late(self) -> bool:
        return self.meter.max_lag_s - self.noise_s > MAX_LAG_S

    @property
    def busy(self) -> bool:
        """Whether the loop's own thread ran longer than the bound between two ticks: work done on the loop."""
        return self.meter.max_busy_s > MAX_LAG_S


async def measure(case: Case, door_name: str, serve: Any, store: ModelStore, access: AccessLines) -> Cell:
    async with serve(grpc_port=0, **case.settings) as (client, app):
        target = f"127.0.0.1:{app.state.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            door = DOORS[door_name](client, channel, target, access)
            if case.warm:
                assert (await client.post("/classify", files={"file": png(7)})).status_code == 200
            send = await case.prepare(door, Env(client, app, store))
            # A full collection now, not inside the measured window: a pass over what the whole test session has
            # piled up (hundreds of ms late in a full suite run) is not the door's cost; the server itself
            # collects and freezes its heap once it has started (service/app.py).
            gc.collect()
            noise_s = await idle_lag_s()
            meter = LagMeter()
            async with meter.measuring():
                run = await send()
    return Cell(run, door, meter, noise_s)


# Cells whose loop lag is known to exceed the bound in a full suite run, reported instead of asserted until fixed:
# gRPC receiving a 20 MiB message keeps the loop thread busy 78-91 ms in a long CI process (under 50 ms when the
# cell runs alone); grpc-python hands the message over on the loop. Everything else in the cell is asserted.
KNOWN_LAG_GAPS = {("bomb-of-elements-binary", "grpc")}


@pytest.mark.parametrize("door_name", list(DOORS))
@pytest.mark.parametrize("case_name", list(CASES))
async def test_every_door_answers_the_same_class(
    case_name: str, door_name: str, serve: Any, store: ModelStore, access: AccessLines, ledger: Ledger
) -> None:
    case = CASES[case_name]
    cell = await measure(case, door_name, serve, store, access)
    remeasured = cell.late and not cell.busy
    if remeasured:
        # Late, though the loop's own thread never ran longer than the bound between two ticks: the process was
        # waiting for a CPU (a busy shared machine), not working on the loop. Measured once more, on a new app.
        cell = await measure(case, door_name, serve, store, access)
    run, door, meter = cell.run, cell.door, cell.meter
    classes = Counter(o.cls for o in run.hostile)
    ledger.cells[case_name, door_name] = {
        "classes": classes,
        "first": run.hostile[0] if run.hostile else None,
        "lag_ms": meter.max_lag_s * 1e3,
        "busy_ms": meter.max_busy_s * 1e3,
        "noise_ms": cell.noise_s * 1e3,
        "remeasured": remeasured,
        "peak_rss_mib": meter.peak_rss_mib,
    }
    problems = [
        *(
            [f"hostile: {dict(classes)}, expected {case.expected}; first: {run.hostile[0]}"]
            if set(classes) != {case.expected}
            else []
        ),
        *(f"honest request not answered: {o}" for o in run.honest if o.cls != OK),
        *(f"check failed: {name}" for name, holds in run.checks.items() if not holds),
        *(f"{n} x outside the classes (a server error?): {o}" for o, n in unclassified(door.outcomes).items()),
        *(
            f"a server path {found} in {o}"
            for o in door.outcomes
            if (found := leaks(o, str(store.root), str(Path.cwd())))
        ),
        *(
            f"{o.cls} without retry-after: {o}"
            for o in door.outcomes
            if o.cls in (RATE_LIMITED, UNAVAILABLE) and not o.retry_after
        ),
    ]
    if cell.late and (case_name, door_name) in KNOWN_LAG_GAPS:
        # Reported, not asserted: a known gap of the product, left open in issue 21 (see KNOWN_LAG_GAPS).
        print(f"KNOWN GAP {case_name} on {door_name}: event loop lagged {meter.max_lag_s * 1e3:.0f} ms")
    elif cell.late:
        problems.append(
            f"event loop lagged {meter.max_lag_s * 1e3:.0f} ms ({cell.noise_s * 1e3:.0f} ms when idle; its own "
            f"thread ran up to {meter.max_busy_s * 1e3:.0f} ms between two ticks{'; measured twice' * remeasured})"
        )
    assert not problems, f"{case_name} on {door_name}:\n" + "\n".join(problems)


def unclassified(outcomes: list[Outcome]) -> Counter[Outcome]:
    """The outcomes no class names (a 500, INTERNAL, UNKNOWN, a 502, ...), counted: 503 and 504 have classes."""
    return Counter(o for o in outcomes if o.cls not in CLASSES or o.status.startswith(("500", "INTERNAL")))


def matrix_table(ledger: Ledger) -> str:
    doors = list(DOORS)
    rows = [f"{'case':38} {'expected':13}" + "".join(f"{d:>34}" for d in doors)]
    for name, case in CASES.items():
        cells = []
        for door in doors:
            cell = ledger.cells.get((name, door))
            if cell is None:
                cells.append(f"{'-':>34}")
                continue
            shown = "/".join(sorted(cell["classes"]))
            mark = "ok" if set(cell["classes"]) == {case.expected} else "FAIL"
            text = f"{shown} {mark} ({cell['lag_ms']:.0f} ms)"
            cells.append(f"{text:>34}")
        rows.append(f"{name:38} {case.expected:13}" + "".join(cells))
    return "\n".join(rows)


async def test_the_matrix_has_one_class_per_case_and_memory_stays_bounded(ledger: Ledger) -> None:
    if not ledger.cells:
        pytest.skip("no cell of the matrix ran in this session")
    table = matrix_table(ledger)
    print("\n" + table)
    for (name, door), cell in ledger.cells.items():
        again = ", measured twice" if cell["remeasured"] else ""
        print(
            f"{name} / {door}: lag {cell['lag_ms']:.0f} ms (loop busy {cell['busy_ms']:.0f} ms, idle "
            f"{cell['noise_ms']:.0f} ms{again}); first: {cell['first']}"
        )
    peak = max(cell["peak_rss_mib"] for cell in ledger.cells.values())
    growth, now = peak - ledger.rss_before_mib, rss_mib() - ledger.rss_before_mib
    lag = max(cell["lag_ms"] for cell in ledger.cells.values())
    print(f"RSS before {ledger.rss_before_mib:.0f} MiB, peak growth {growth:.0f} MiB, now +{now:.0f} MiB")
    print(f"largest event-loop lag of any cell: {lag:.0f} ms")
    split = {
        name: {door: sorted(ledger.cells[name, door]["classes"]) for door in DOORS if (name, door) in ledger.cells}
        for name in CASES
    }
    disagreeing = {name: doors for name, doors in split.items() if len({tuple(c) for c in doors.values()}) > 1}
    assert not disagreeing, f"doors disagree: {disagreeing}\n{table}"
    assert growth < MAX_RSS_GROWTH_MIB, f"RSS grew {growth:.0f} MiB over the matrix\n{table}"
