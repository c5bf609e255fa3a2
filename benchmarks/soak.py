"""The soak benchmark: good clients beside hostile and slow ones against a real ``vitserve serve`` on 127.0.0.1.

The good clients send at a steady rate, half of the capacity measured first (as many back-to-back clients as
the server can take for 15 s): a service is run below saturation, and at saturation any extra work, hostile or
not, would lengthen every queue. First the good clients alone at that rate (the unloaded baseline), then for
``minutes`` the same good clients beside:
hostile JSON bodies (a huge entry list, deep nesting), undecodable and refused images, the worst allowed image
(a 16-bit PNG at the pixel cap), refused URLs, unauthenticated admin uploads, and slow clients (partial headers,
trickled bodies, silent connections). Reports the server's RSS over time, responses by kind and status, and the
good clients' p50/p99 against the baseline. Every client talks to 127.0.0.1 only; the hostile and slow ones
run in a process of their own, at a lower CPU priority (see ``others``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
from vitserve.benchmarks.http_bench import free_port, realistic_jpegs, serve_command
from vitserve.benchmarks.server_fleet import wait_ready
from vitserve.vit.config import DataConfig

logger = logging.getLogger(__name__)

GOOD_CLIENTS = 4
GOOD_LOAD = 0.5  # the good clients' request rate, as a fraction of the capacity measured first
CAPACITY_PROBE_S = 15.0
CLIENTS_NICENESS = 10  # the hostile and slow clients' process (see ``others``)
ADMIN_TOKEN = "soak-admin-token-0123456789"
CLIENT_HEADER = "x-soak-client"  # the soak's "trusted proxy" header: each kind of client is its own client
SERVER_ENV = {
    "VITSERVE_CLIENT_HEADER": CLIENT_HEADER,
    "VITSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
    "VITSERVE_HEADER_TIMEOUT_S": "2",
    "VITSERVE_BODY_TIMEOUT_S": "3",
    "VITSERVE_REQUEST_TIMEOUT_S": "10",
    "VITSERVE_QUEUE_SIZE": "64",
    "VITSERVE_MAX_BATCH_SIZE": "8",
    "VITSERVE_MAX_DELAY_MS": "5",
}


@dataclass
class Tally:
    """Responses by (client kind, status or exception name); the good clients' latencies."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    good_ms: list[float] = field(default_factory=list)
    # Per good answer: the server's own account (total, decode, queue, infer ms), to say where slow ones waited.
    good_stages: list[tuple[float, float, float, float]] = field(default_factory=list)

    def count(self, kind: str, outcome: str) -> None:
        self.outcomes[(kind, outcome)] += 1


@contextlib.contextmanager
def soak_server(store_root: Path, ref: str, engine: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """``vitserve serve`` with the soak's settings; yields (URL, PID)."""
    port = free_port()
    command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store_root)]
    command += ["--model", ref, "--engine", engine, "--log-level", "WARNING"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSERVE_")} | SERVER_ENV
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout_s=600)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_requests() -> list[tuple[str, dict[str, Any]]]:
    """(kind, httpx request arguments) for the hostile clients, built once."""
    from PIL import Image

    wide = io.BytesIO()
    Image.fromarray(np.zeros((5000, 8000), np.uint16)).save(wide, format="PNG")  # 40 MP, 16-bit: the worst allowed
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")  # 144 MP: refused from its header
    as_json = {"content-type": "application/json"}
    return [
        (
            "json_many_entries",
            {"content": json.dumps({"images": [{"url": "http://x/a"}] * 100_000}), "headers": as_json},
        ),
        ("json_deep", {"content": b'{"images":' + b"[" * 50_000 + b"]" * 50_000 + b"}", "headers": as_json}),
        ("json_bad", {"content": b'{"image_base64": "%%%"}', "headers": as_json}),
        ("url_refused", {"json": {"url": "http://127.0.0.1:1/x.png"}}),
        ("url_siit", {"json": {"url": "http://[::ffff:0:7f00:1]/x.png"}}),
        ("garbage_image", {"content": os.urandom(4096), "headers": {"content-type": "image/jpeg"}}),
        ("pdf", {"content": b"%PDF-1.4\n" + os.urandom(512), "headers": {"content-type": "image/png"}}),
        ("pixel_bomb", {"content": bomb.getvalue(), "headers": {"content-type": "image/png"}}),
        ("wide_16bit_40mp", {"content": wide.getvalue(), "headers": {"content-type": "image/png"}}),
    ]


async def good_client(
    url: str, jpegs: list[bytes], until: float, tally: Tally, seed: int, interval_s: float | None = None
) -> None:
    """One JPEG after another; with ``interval_s``, one every ``interval_s`` (a late answer skips the slots it
    missed: the rate never exceeds the pace), else back to back."""
    headers = {CLIENT_HEADER: f"good-{seed}", "content-type": "image/jpeg"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        i = seed
        next_at = time.monotonic() + (interval_s or 0.0) * seed / GOOD_CLIENTS  # spread the clients' phases
        while time.monotonic() < until:
            if interval_s is not None:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + interval_s, time.monotonic())
            started = time.perf_counter()
            try:
                r = await client.post("/classify", content=jpegs[i % len(jpegs)], headers=headers)
                tally.count("good", str(r.status_code))
                if r.status_code == 200:
                    tally.good_ms.append((time.perf_counter() - started) * 1e3)
                    body = r.json()
                    t = body["results"][0]["timings"]
                    tally.good_stages.append((body["total_ms"], t["decode_ms"], t["queue_ms"], t["infer_ms"]))
            except httpx.HTTPError as err:
                tally.count("good", type(err).__name__)
            i += 1


async def hostile_client(url: str, requests: list[tuple[str, dict[str, Any]]], until: float, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        i = 0
        while time.monotonic() < until:
            kind, kwargs = requests[i % len(requests)]
            headers = {CLIENT_HEADER: "hostile", **kwargs.get("headers", {})}
            try:
                r = await client.post("/classify", **{**kwargs, "headers": headers})
                tally.count(kind, str(r.status_code))
            except httpx.HTTPError as err:
                tally.count(kind, type(err).__name__)
            if i % 5 == 0:  # an unauthenticated 1 MiB admin upload
                r = await client.post("/admin/models/x/versions", content=b"\0" * (1 << 20))
                tally.count("admin_no_token", str(r.status_code))
            i += 1


async def slow_client(host: str, port: int, until: float, tally: Tally, style: str) -> None:
    """Partial headers, a trickled body or a silent connection, reopened whenever the server closes it."""
    while time.monotonic() < until:
        outcome = await asyncio.to_thread(_slow_connection, host, port, style, until)
        tally.count(f"slow_{style}", outcome)


TRICKLE_HEAD = (
    b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
)


def _slow_connection(host: str, port: int, style: str, until: float) -> str:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.settimeout(0.5)
        if style == "headers":
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif style == "body":
            sock.sendall(TRICKLE_HEAD)
        answer = b""
        while time.monotonic() < until:
            try:
                if style != "silent":
                    sock.sendall(b"abcd" if style == "body" else b"X")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return "reset"
            if not chunk:
                return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
            answer += chunk
        return "held_to_end"


async def run_phase(
    url: str,
    seconds: float,
    *,
    hostile: bool,
    tally: Tally,
    on_tick: Callable[[], None],
    good_rate: float | None = None,
) -> None:
    """``seconds`` of good clients (at ``good_rate`` requests/s in all, else back to back), with the hostile
    and slow ones when ``hostile``: those run in a process of their own (``others``) so that building and
    sending their bodies never delays the good clients' event loop, and their outcomes join ``tally``."""
    until = time.monotonic() + seconds
    jpegs = realistic_jpegs(quality=85)
    interval = GOOD_CLIENTS / good_rate if good_rate else None
    tasks: list[Awaitable[Any]] = [good_client(url, jpegs, until, tally, i, interval) for i in range(GOOD_CLIENTS)]

    async def ticker() -> None:
        while time.monotonic() < until:
            on_tick()
            await asyncio.sleep(5)

    with contextlib.ExitStack() as stack:
        if hostile:
            spawn = multiprocessing.get_context("spawn")
            executor = stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=spawn))
            tasks.append(asyncio.get_running_loop().run_in_executor(executor, others, url, seconds))
        results = await asyncio.gather(*tasks, ticker())
    if hostile:
        tally.outcomes.update(results[GOOD_CLIENTS].outcomes)


def others(url: str, seconds: float) -> Tally:
    """The hostile and slow clients for ``seconds`` (run in a child process); returns their outcomes.

    The process runs at niceness +10: on one machine the load generator competes with the server for the CPUs,
    and these clients stand for other machines, whose work costs the server nothing but what they send."""
    os.nice(CLIENTS_NICENESS)
    tally = Tally()

    async def clients() -> None:
        until = time.monotonic() + seconds
        requests = hostile_requests()
        port = int(url.rsplit(":", 1)[1])
        tasks = [hostile_client(url, requests, until, tally) for _ in range(2)]
        tasks += [slow_client("127.0.0.1", port, until, tally, style) for style in ("headers", "body", "silent")]
        await asyncio.gather(*tasks)

    asyncio.run(clients())
    return tally


def run_soak(out: Path, *, minutes: float, engine: str = "auto", baseline_s: float = 30.0) -> dict[str, Any]:
    """Baseline, then ``minutes`` of soak; writes soak.json and soak.md into ``out``; returns the payload."""
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.engine import resolve_kind

    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would cost the load generator CPU
    with bench_workdir() as workdir:
        store, card = bench_store(QUICK_CONFIG, DataConfig(img_size=64), workdir / "store")
        with soak_server(store.root, card.ref, resolve_kind(engine, "CPU"), workdir / "serve.log") as (url, pid):
            rss: list[tuple[float, float]] = []
            started = time.monotonic()

            def sample() -> None:
                rss.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))

            probe = Tally()
            asyncio.run(run_phase(url, CAPACITY_PROBE_S, hostile=False, tally=probe, on_tick=sample))
            rate = GOOD_LOAD * len(probe.good_ms) / CAPACITY_PROBE_S
            logger.info("capacity %.1f requests/s; good clients send %.1f/s", rate / GOOD_LOAD, rate)
            baseline = Tally()
            asyncio.run(run_phase(url, baseline_s, hostile=False, tally=baseline, on_tick=sample, good_rate=rate))
            soak_started = time.monotonic() - started
            soak = Tally()
            asyncio.run(run_phase(url, minutes * 60, hostile=True, tally=soak, on_tick=sample, good_rate=rate))
            sample()
            alive = httpx.get(f"{url}/readyz", timeout=10).status_code
    payload = summarize(minutes, baseline, soak, rss, soak_started, alive, good_rate=rate)
    (out / "soak.json").write_text(json.dumps(payload, indent=2))
    (out / "soak.md").write_text(render(payload))
    return payload


def summarize(
    minutes: float,
    baseline: Tally,
    soak: Tally,
    rss: list[tuple[float, float]],
    soak_started: float,
    ready: int,
    *,
    good_rate: float | None = None,
) -> dict[str, Any]:
    """``rss``: (seconds since start, MiB) samples. Warm-up is the soak's first fifth (at least a minute). RSS
    swings between a floor and a ceiling as the biggest images' decodes come and go; a leak lifts both. Growth is
    the larger rise, floor or ceiling (each a minute's minimum or maximum), from the first minute after warm-up
    to the last; the swing (the highest sample over the first minute's floor) is reported beside it."""
    warm_end = soak_started + max(60.0, minutes * 60 / 5)
    after = [(t, mib) for t, mib in rss if t >= warm_end]
    first = last = (float("nan"), float("nan"))
    growth: float | None = None
    swing: float | None = None
    if len(after) > 2:
        head = [mib for t, mib in after if t < after[0][0] + 60]
        tail = [mib for t, mib in after if t > after[-1][0] - 60]
        first, last = (min(head), max(head)), (min(tail), max(tail))
        growth = round(max((last[0] - first[0]) / first[0], (last[1] - first[1]) / first[1]) * 100, 1)
        swing = round((max(mib for _, mib in after) - first[0]) / first[0] * 100, 1)

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    outcomes: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(soak.outcomes.items()):
        outcomes.setdefault(kind, {})[outcome] = n
    fives = sum(n for (_, outcome), n in soak.outcomes.items() if outcome.startswith("5"))
    good_5xx = sum(n for (kind, outcome), n in soak.outcomes.items() if kind == "good" and outcome.startswith("5"))
    return {
        "minutes": minutes,
        "good_rate_per_s": None if good_rate is None else round(good_rate, 1),
        "rss_mib": rss,
        "rss_after_warmup_mib": first,  # (floor, ceiling) of the first minute after warm-up
        "rss_last_minute_mib": last,
        "rss_growth_after_warmup_pct": growth,
        "rss_swing_pct": swing,
        "responses": outcomes,
        "total_5xx": fives,
        "good_5xx": good_5xx,
        "good_unloaded": {
            "requests": len(baseline.good_ms),
            "p50_ms": pct(baseline.good_ms, 50),
            "p99_ms": pct(baseline.good_ms, 99),
        },
        "good_loaded": {
            "requests": len(soak.good_ms),
            "p50_ms": pct(soak.good_ms, 50),
            "p99_ms": pct(soak.good_ms, 99),
            "slowest_1pct": slowest(soak),
        },
        "ready_at_end": ready == 200,
    }


def _span(floor_ceiling: tuple[float, float]) -> str:
    return f"{floor_ceiling[0]:g}–{floor_ceiling[1]:g}"


def slowest(tally: Tally) -> dict[str, float] | None:
    """Medians over the slowest 1 % of good answers (by client latency): the client's ms and the server's own
    total, decode, queue and infer ms; the difference between client and server total is outside the app
    (connection, HTTP parsing, the client's own scheduling)."""
    if len(tally.good_ms) < 100 or len(tally.good_stages) != len(tally.good_ms):
        return None
    order = np.argsort(tally.good_ms)[-len(tally.good_ms) // 100 :]
    rows = np.array([(tally.good_ms[i], *tally.good_stages[i]) for i in order])
    names = ("client_ms", "server_total_ms", "decode_ms", "queue_ms", "infer_ms")
    return {name: round(float(v), 1) for name, v in zip(names, np.median(rows, axis=0), strict=True)}


def render(payload: dict[str, Any]) -> str:
    lines = [f"# Soak: {payload['minutes']:g} min", ""]
    if payload.get("good_rate_per_s") is not None:
        lines += [f"Good clients: {GOOD_CLIENTS}, {payload['good_rate_per_s']} requests/s in all.", ""]
    base, loaded = payload["good_unloaded"], payload["good_loaded"]
    lines += ["| good clients | requests | p50 ms | p99 ms |", "|---|---|---|---|"]
    lines += [f"| unloaded | {base['requests']} | {base['p50_ms']} | {base['p99_ms']} |"]
    lines += [f"| beside hostile + slow | {loaded['requests']} | {loaded['p50_ms']} | {loaded['p99_ms']} |", ""]
    if loaded.get("slowest_1pct"):
        lines += [
            "Slowest 1 % beside hostile + slow (medians, ms): "
            + ", ".join(f"{k.removesuffix('_ms')} {v:g}" for k, v in loaded["slowest_1pct"].items()),
            "",
        ]
    lines += [
        f"RSS floor–ceiling (MiB) in the first minute after warm-up {_span(payload['rss_after_warmup_mib'])}, in "
        f"the last minute {_span(payload['rss_last_minute_mib'])}: growth after warm-up "
        f"{payload['rss_growth_after_warmup_pct']} % (swing {payload['rss_swing_pct']} % over the floor); "
        f"5xx: {payload['total_5xx']} (good clients: {payload['good_5xx']}); "
        f"ready at the end: {payload['ready_at_end']}",
        "",
        "| client kind | outcomes |",
        "|---|---|",
    ]
    lines += [
        f"| {kind} | {', '.join(f'{o}: {n}' for o, n in sorted(counts.items()))} |"
        for kind, counts in payload["responses"].items()
    ]
    lines += ["", "RSS (s, MiB): " + ", ".join(f"{t:g}: {m:g}" for t, m in payload["rss_mib"])]
    return "\n".join(lines) + "\n"
