"""Fairness of the per-client limits against a real ``vitserve serve``: what they cost a client alone, and how
they split a replica two greedy clients contend for.

- **Alone**: one client, closed loop, ``ALONE_CONCURRENCY`` requests at once (every batch full, and more than
  half the admission budget in progress: the replica is busy), against two servers started alike but for the
  per-client limits: the defaults, and all off (``CLIENT_RATE=0``, ``CLIENT_DECODE_CPU=0``, ``CLIENT_SHARE=1``).
  Both are up at once and the rounds alternate between them, so a drift in the machine's load falls on both.
  The figure: the ratio of their images/s (target ≥ 0.95).
- **Greedy**: two clients, closed loop, ignoring Retry-After (a refused request is sent again after
  ``REFUSED_PAUSE_S``), with unequal concurrency (``GREEDY_CONCURRENCY``, each enough to saturate the replica
  alone), against the server with the default limits. They are two identities as the server sees them: two
  loopback source addresses, 127.0.0.1 and 127.0.0.2 (no trusted client header). The figure: each one's share of
  the images served in the measured window (target 40–60 %).

Every request is ``POST /classify`` with one of the soak's 500×375 JPEGs; the servers have the soak's settings
but identify clients by peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
from vitserve.benchmarks.http_bench import realistic_jpegs
from vitserve.benchmarks.soak import SERVER_ENV, soak_server
from vitserve.vit.config import DataConfig

logger = logging.getLogger(__name__)

# The soak's settings, clients told apart by peer address (no trusted header); and the same with no limit.
LIMITED_ENV = {
    k: v for k, v in SERVER_ENV.items() if k not in ("VITSERVE_CLIENT_HEADER", "VITSERVE_GRPC_CLIENT_HEADER")
}
UNLIMITED_ENV = LIMITED_ENV | {
    "VITSERVE_CLIENT_RATE": "0",
    "VITSERVE_CLIENT_DECODE_CPU": "0",
    "VITSERVE_CLIENT_SHARE": "1",
}
ALONE_CONCURRENCY = 48  # over BUSY_FRACTION of the admission budget (QUEUE_SIZE 64 + MAX_BATCH_SIZE 8)
GREEDY_CONCURRENCY = {"127.0.0.1": 48, "127.0.0.2": 16}  # source address → requests at once; 16 saturates alone
ALONE_SHARE = 0.6  # of the time: the alone rounds; the rest is the greedy run
ROUNDS = 6  # alone rounds, alternating limited / unlimited
SETTLE_S = 1.0  # the start of an alone round that is not measured (connections open, the pipeline fills)
GREEDY_SETTLE_S = 4.0  # the start of the greedy run that is not measured (shares settle)
REFUSED_PAUSE_S = 0.02  # a greedy client's pause after a refusal (it ignores Retry-After)
ALONE_TARGET = 0.95
SHARE_TARGET_PCT = (40.0, 60.0)


async def closed_loop(
    url: str, jpegs: Sequence[bytes], address: str, concurrency: int, window: tuple[float, float]
) -> Counter[str]:
    """``concurrency`` requests at once from ``address`` until the window's end; the outcomes of the answers
    that arrived within the window (monotonic times)."""
    counts: Counter[str] = Counter()
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits(max_connections=concurrency))
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:

        async def one(i: int) -> None:
            while time.monotonic() < window[1]:
                try:
                    r = await client.post(
                        "/classify", content=jpegs[i % len(jpegs)], headers={"content-type": "image/jpeg"}
                    )
                    outcome = str(r.status_code)
                except httpx.HTTPError as err:
                    outcome = type(err).__name__
                if window[0] <= time.monotonic() <= window[1]:
                    counts[outcome] += 1
                if outcome != "200":
                    await asyncio.sleep(REFUSED_PAUSE_S)
                i += concurrency

        await asyncio.gather(*(one(i) for i in range(concurrency)))
    return counts


def measure(
    urls: Sequence[str], jpegs: Sequence[bytes], clients: dict[str, int], seconds: float, settle_s: float
) -> list[Counter[str]]:
    """``clients`` (address → concurrency) against ``urls`` (one per client) for ``seconds``; their outcomes
    after ``settle_s``."""
    start = time.monotonic()
    window = (start + settle_s, start + seconds)

    async def run() -> list[Counter[str]]:
        loops = [closed_loop(url, jpegs, a, c, window) for url, (a, c) in zip(urls, clients.items(), strict=True)]
        return list(await asyncio.gather(*loops))

    return asyncio.run(run())


def alone(limited: str, unlimited: str, jpegs: Sequence[bytes], seconds: float) -> dict[str, Any]:
    """Alternating rounds of one client against each server; images/s per server and their ratio."""
    round_s = seconds / ROUNDS
    rates: dict[str, list[float]] = {"limits": [], "no_limits": []}
    rounds: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        name, url = ("limits", limited) if i % 2 == 0 else ("no_limits", unlimited)
        (counts,) = measure([url], jpegs, {"127.0.0.1": ALONE_CONCURRENCY}, round_s, SETTLE_S)
        rate = round(counts["200"] / (round_s - SETTLE_S), 1)
        rates[name].append(rate)
        rounds.append({"server": name, "images_per_s": rate, "outcomes": dict(counts)})
        logger.info("alone, round %d (%s): %.1f images/s", i + 1, name, rate)
    mean = {name: round(sum(values) / len(values), 1) for name, values in rates.items()}
    ratio = round(mean["limits"] / mean["no_limits"], 3) if mean["no_limits"] else None
    return {
        "concurrency": ALONE_CONCURRENCY,
        "round_s": round(round_s, 1),
        "rounds": rounds,
        "images_per_s": mean,
        "ratio": ratio,
        "target": ALONE_TARGET,
        "met": ratio is not None and ratio >= ALONE_TARGET,
    }


def greedy(url: str, jpegs: Sequence[bytes], seconds: float) -> dict[str, Any]:
    """Two greedy clients from two addresses against ``url``; each one's share of the images served."""
    counts = measure([url] * len(GREEDY_CONCURRENCY), jpegs, GREEDY_CONCURRENCY, seconds, GREEDY_SETTLE_S)
    served = sum(c["200"] for c in counts)
    window_s = seconds - GREEDY_SETTLE_S
    shares = [round(100 * c["200"] / served, 1) if served else None for c in counts]
    clients = [
        {"address": address, "concurrency": concurrency, "images": c["200"], "share_pct": share, "outcomes": dict(c)}
        for (address, concurrency), c, share in zip(GREEDY_CONCURRENCY.items(), counts, shares, strict=True)
    ]
    low, high = SHARE_TARGET_PCT
    return {
        "window_s": round(window_s, 1),
        "images_per_s": round(served / window_s, 1),
        "clients": clients,
        "target_pct": SHARE_TARGET_PCT,
        "met": all(share is not None and low <= share <= high for share in shares),
    }


def run_fairness(out: Path, *, minutes: float, engine: str = "auto") -> dict[str, Any]:
    """Both measurements over ``minutes``; writes fairness.json and fairness.md into ``out``; returns the payload."""
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.engine import resolve_kind

    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kind = resolve_kind(engine, "CPU")
    jpegs = realistic_jpegs(quality=85)
    with bench_workdir() as workdir, contextlib.ExitStack() as servers:
        store, card = bench_store(QUICK_CONFIG, DataConfig(img_size=64), workdir / "store")
        limited, _ = servers.enter_context(soak_server(store.root, card, kind, workdir / "limited.log", LIMITED_ENV))
        unlimited, _ = servers.enter_context(
            soak_server(store.root, card, kind, workdir / "unlimited.log", UNLIMITED_ENV)
        )
        seconds = minutes * 60
        payload = {
            "minutes": minutes,
            "engine": kind,
            "alone": alone(limited.url, unlimited.url, jpegs, seconds * ALONE_SHARE),
            "greedy": greedy(limited.url, jpegs, seconds * (1 - ALONE_SHARE)),
        }
    (out / "fairness.json").write_text(json.dumps(payload, indent=2))
    (out / "fairness.md").write_text(render(payload))
    return payload


def render(payload: dict[str, Any]) -> str:
    a, g = payload["alone"], payload["greedy"]
    lines = [f"# Fairness: {payload['minutes']:g} min, engine {payload['engine']}", ""]
    lines += [
        f"One client alone ({a['concurrency']} requests at once, {len(a['rounds'])} alternating rounds of "
        f"{a['round_s']:g} s): {a['images_per_s']['limits']} images/s with the default limits, "
        f"{a['images_per_s']['no_limits']} with all off: ratio **{a['ratio']}** (target ≥ {a['target']}: "
        f"{'met' if a['met'] else 'NOT met'}).",
        "",
        "Rounds (images/s): " + ", ".join(f"{r['server']} {r['images_per_s']:g}" for r in a["rounds"]),
        "",
        f"Two greedy clients, {g['window_s']:g} s measured, {g['images_per_s']} images/s served in all "
        f"(target each {g['target_pct'][0]:g}–{g['target_pct'][1]:g} %: {'met' if g['met'] else 'NOT met'}):",
        "",
        "| client | requests at once | images served | share | outcomes |",
        "|---|---|---|---|---|",
    ]
    for c in g["clients"]:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(c["outcomes"].items()))
        lines += [f"| {c['address']} | {c['concurrency']} | {c['images']} | **{c['share_pct']} %** | {outcomes} |"]
    return "\n".join(lines) + "\n"
