"""The soak benchmark: good clients beside hostile and slow ones against a real ``vitserve serve`` on 127.0.0.1,
over its three doors: ``/classify``, the Open Inference Protocol's ``/v2`` REST and its gRPC port.

The good clients (a third per door) send at a steady rate, half of the capacity measured first (as many
back-to-back clients as the server can take for 15 s): a service is run below saturation, and at saturation any
extra work, hostile or not, would lengthen every queue. First the good clients alone at that rate (the unloaded
baseline), then for ``minutes`` the same good clients beside the hostile clients of ``soak_hostile`` (bombs,
refusals, the worst allowed image, over-rate senders, forged identities) and the slow ones of ``soak_slow``, at
every door. Reports the server's RSS over time, responses by door, kind and status, and the good clients' p50/p99
per door against the baseline. Every client talks to 127.0.0.1 only; the hostile and slow ones run in a process
of their own, at a lower CPU priority (see ``others``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
from vitserve.benchmarks.http_bench import free_ports, realistic_jpegs, serve_command
from vitserve.benchmarks.server_fleet import wait_ready
from vitserve.benchmarks.soak_doors import CLIENT_HEADER, DOORS, Doors, open_door
from vitserve.benchmarks.soak_hostile import HOSTILE_GROUPS, hostile_clients
from vitserve.benchmarks.soak_report import Tally, render, summarize
from vitserve.benchmarks.soak_slow import slow_clients
from vitserve.model_store import Card
from vitserve.vit.config import DataConfig

logger = logging.getLogger(__name__)

GOOD_CLIENTS = 6  # two per door
GOOD_LOAD = 0.5  # the good clients' request rate, as a fraction of the capacity measured first
CAPACITY_PROBE_S = 15.0
CLIENT_GROUPS = HOSTILE_GROUPS | {"slow"}  # what ``without`` may leave out
CLIENTS_NICENESS = 10  # the hostile and slow clients' process (see ``others``)
ADMIN_TOKEN = "soak-admin-token-0123456789"
# The soak's "trusted proxy" header, at the HTTP and the gRPC door: each kind of client is its own client.
SERVER_ENV = {
    "VITSERVE_CLIENT_HEADER": CLIENT_HEADER,
    "VITSERVE_GRPC_CLIENT_HEADER": CLIENT_HEADER,
    "VITSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
    "VITSERVE_HEADER_TIMEOUT_S": "2",
    "VITSERVE_BODY_TIMEOUT_S": "3",
    "VITSERVE_REQUEST_TIMEOUT_S": "10",
    "VITSERVE_QUEUE_SIZE": "64",
    "VITSERVE_MAX_BATCH_SIZE": "8",
    "VITSERVE_MAX_DELAY_MS": "5",
}


@contextlib.contextmanager
def soak_server(
    store_root: Path, card: Card, engine: str, log_path: Path, env: Mapping[str, str] = SERVER_ENV
) -> Iterator[tuple[Doors, int]]:
    """``vitserve serve`` of ``card`` with ``env`` (the soak's settings) and a gRPC port; yields (its doors, its
    PID)."""
    port, grpc_port = free_ports(2)
    command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store_root)]
    command += ["--grpc-port", str(grpc_port), "--model", card.ref, "--engine", engine, "--log-level", "WARNING"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VITSERVE_")} | dict(env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout_s=600)
        yield Doors(url, f"127.0.0.1:{grpc_port}", card.name), process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rejections(metrics: str) -> dict[str, int]:
    """The server's refused images by reason, from its Prometheus text (``vitserve_rejections_total``)."""
    found = re.findall(r'^vitserve_rejections_total\{reason="([^"]+)"\} ([0-9.e+]+)$', metrics, re.MULTILINE)
    return {reason: int(float(n)) for reason, n in found}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def good_client(
    doors: Doors, door: str, jpegs: Sequence[bytes], until: float, tally: Tally, seed: int, interval_s: float | None
) -> None:
    """One JPEG after another at ``door``; with ``interval_s``, one every ``interval_s`` (a late answer skips the
    slots it missed: the rate never exceeds the pace), else back to back."""
    async with open_door(doors, door, f"good-{seed}") as client:
        i = seed
        next_at = time.monotonic() + (interval_s or 0.0) * seed / GOOD_CLIENTS  # spread the clients' phases
        while time.monotonic() < until:
            if interval_s is not None:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + interval_s, time.monotonic())
            started = time.perf_counter()
            outcome, stages = await client.send(jpegs[i % len(jpegs)])
            tally.good(door, outcome, (time.perf_counter() - started) * 1e3, stages)
            i += 1


async def run_phase(
    doors: Doors,
    seconds: float,
    *,
    hostile: bool,
    tally: Tally,
    on_tick: Callable[[], None],
    good_rate: float | None = None,
    without: frozenset[str] = frozenset(),
) -> None:
    """``seconds`` of good clients (at ``good_rate`` requests/s in all, else back to back), with the hostile
    and slow ones when ``hostile``: those run in a process of their own (``others``) so that building and
    sending their bodies never delays the good clients' event loop, and their outcomes join ``tally``. ``without``:
    the groups of clients left out (``CLIENT_GROUPS``)."""
    until = time.monotonic() + seconds
    jpegs = realistic_jpegs(quality=85)
    interval = GOOD_CLIENTS / good_rate if good_rate else None
    tasks: list[Awaitable[Any]] = [
        good_client(doors, DOORS[i % len(DOORS)], jpegs, until, tally, i, interval) for i in range(GOOD_CLIENTS)
    ]

    async def ticker() -> None:
        while time.monotonic() < until:
            on_tick()
            await asyncio.sleep(5)

    with contextlib.ExitStack() as stack:
        if hostile:
            spawn = multiprocessing.get_context("spawn")
            executor = stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=spawn))
            tasks.append(asyncio.get_running_loop().run_in_executor(executor, others, doors, seconds, without))
        results = await asyncio.gather(*tasks, ticker())
    if hostile:
        tally.merge(results[GOOD_CLIENTS])


def others(doors: Doors, seconds: float, without: frozenset[str] = frozenset()) -> Tally:
    """The hostile and slow clients for ``seconds`` (run in a child process); returns their outcomes.

    The process runs at niceness +10: on one machine the load generator competes with the server for the CPUs,
    and these clients stand for other machines, whose work costs the server nothing but what they send."""
    os.nice(CLIENTS_NICENESS)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tally = Tally()

    async def clients() -> None:
        until = time.monotonic() + seconds
        jpegs = realistic_jpegs(quality=85)
        tasks = hostile_clients(doors, jpegs, until, tally, without)
        if "slow" not in without:
            tasks += slow_clients(doors, until, tally)
        await asyncio.gather(*tasks)

    asyncio.run(clients())
    return tally


def run_soak(
    out: Path, *, minutes: float, engine: str = "auto", baseline_s: float = 30.0, without: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Baseline, then ``minutes`` of soak without the groups of clients in ``without`` (``CLIENT_GROUPS``: to see
    what each costs the good clients); writes soak.json and soak.md into ``out``; returns the payload."""
    if not without <= CLIENT_GROUPS:
        raise ValueError(f"unknown client groups {sorted(without - CLIENT_GROUPS)}; known: {sorted(CLIENT_GROUPS)}")
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.engine import resolve_kind

    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would cost the load generator CPU
    with bench_workdir() as workdir:
        store, card = bench_store(QUICK_CONFIG, DataConfig(img_size=64), workdir / "store")
        with soak_server(store.root, card, resolve_kind(engine, "CPU"), workdir / "serve.log") as (doors, pid):
            rss: list[tuple[float, float]] = []
            started = time.monotonic()

            def sample() -> None:
                rss.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))

            probe = Tally()
            asyncio.run(run_phase(doors, CAPACITY_PROBE_S, hostile=False, tally=probe, on_tick=sample))
            rate = GOOD_LOAD * len(probe.all_good_ms()) / CAPACITY_PROBE_S
            logger.info("capacity %.1f requests/s; good clients send %.1f/s", rate / GOOD_LOAD, rate)
            baseline = Tally()
            asyncio.run(run_phase(doors, baseline_s, hostile=False, tally=baseline, on_tick=sample, good_rate=rate))
            soak_started = time.monotonic() - started
            soak = Tally()
            asyncio.run(
                run_phase(
                    doors, minutes * 60, hostile=True, tally=soak, on_tick=sample, good_rate=rate, without=without
                )
            )
            sample()
            alive = httpx.get(f"{doors.url}/readyz", timeout=10).status_code
            refused = rejections(httpx.get(f"{doors.url}/metrics", timeout=10).text)
    payload = summarize(minutes, baseline, soak, rss, soak_started, alive, good_rate=rate, rejections=refused)
    payload["without"] = sorted(without)
    (out / "soak.json").write_text(json.dumps(payload, indent=2))
    (out / "soak.md").write_text(render(payload, good_clients=GOOD_CLIENTS))
    return payload
