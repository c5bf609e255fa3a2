"""Many models on one replica (issue 24): what loading on demand costs, what a memory budget does under Zipf traffic,
and what the duplicate-image cache saves, each against a real ``vitserve serve`` on 127.0.0.1.

1. **Cold start by model size**: versions of the tiny benchmark config (and, with ``--full``, ViT-S/16 and ViT-B/16
   at 224), random weights, each loaded on demand by one request. Reported: the server's own cold start (build and
   warm-up, ``GET /models``), the first request's latency, a warm request's, and the memory the server measured.
2. **Zipf traffic**: ``models`` tiny versions, the first served, every other loaded on demand, under a memory budget
   that fits ``fits`` of them besides the served one (the per-version cost measured in part 1). Poisson arrivals at
   ``rate`` a second, each for a model drawn by Zipf rank (s = ``ZIPF_S``), for ``seconds``. Reported: throughput,
   p50/p99 (all, and the hottest model), answers by status, the hit rate (requests that found their version
   resident), loads, evictions, cold starts (``/metrics``), and the largest memory use seen against the budget.
3. **The duplicate-image cache**: one model, closed-loop clients, 0 %, 10 % and 50 % of the requests repeating an
   image already sent (the others are unique bytes), with the cache on and off. Reported: images/s, p50/p99 and
   the share the cache answered.

``python -m vitserve.benchmarks.many_models --quick --out DIR`` (or ``vitserve bench --only many-models``) writes
many_models.json and many_models.md into DIR. Benchmarks are not tests: the suite checks only that the quick form
runs (``tests/benchmarks/test_many_models_bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vitserve.benchmarks import report
from vitserve.benchmarks.engine_bench import QUICK_CONFIG
from vitserve.benchmarks.http_bench import free_port, realistic_jpegs, serve_command
from vitserve.benchmarks.server_fleet import ServerProcess, ServerSpec
from vitserve.model_store import Card, ModelStore
from vitserve.vit.config import DataConfig, ViTConfig, get_variant

logger = logging.getLogger(__name__)

MIB = 1024**2
ZIPF_S = 1.1
READY_TIMEOUT_S = 600.0
COLD_TIMEOUT_S = 1800.0  # ViT-B/16: an ONNX export and a compilation on two cores


@dataclass(frozen=True)
class Plan:
    sizes: tuple[str, ...]  # part 1's rows
    models: int  # part 2
    fits: int  # versions loaded on demand that the budget holds besides the served one
    rate: float  # requests a second
    seconds: float
    cache_seconds: float  # part 3, per fraction and cache setting
    cache_clients: int


QUICK = Plan(("tiny",), models=8, fits=3, rate=6.0, seconds=20.0, cache_seconds=6.0, cache_clients=4)
FULL = Plan(
    ("tiny", "vit-s", "vit-b"), models=20, fits=5, rate=15.0, seconds=120.0, cache_seconds=30.0, cache_clients=16
)


def size_config(size: str) -> tuple[ViTConfig, DataConfig]:
    if size == "tiny":
        return QUICK_CONFIG, DataConfig(img_size=QUICK_CONFIG.img_size)
    variant = get_variant({"vit-s": "vit_small_patch16_224", "vit-b": "vit_base_patch16_224"}[size])
    return variant.config, variant.data


def publish(store: ModelStore, name: str, config: ViTConfig, data: DataConfig, seed: int) -> Card:
    """One version of ``name`` with seeded random weights (std 0.02; LayerNorm scales 1), as the other benchmarks."""
    from vitserve.vit.model import parameter_shapes

    rng = np.random.default_rng(seed)
    state = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in sorted(parameter_shapes(config).items())}
    for key in state:
        if key.endswith(".gamma"):
            state[key] = np.ones_like(state[key])
    labels = [f"class_{i}" for i in range(config.num_classes)]
    return store.publish(name, state, config, data, labels, lineage={"source": "random (benchmark)"})


@contextlib.contextmanager
def server(store: ModelStore, model: str, env: dict[str, str], workdir: Path, engine: str) -> Iterator[str]:
    """``vitserve serve`` on a free port serving ``model``, with ``env`` on top of the benchmark's settings."""
    port = free_port()
    command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store.root)]
    command += ["--model", model, "--engine", engine, "--log-level", "WARNING", "--queue-size", "256"]
    settings = {
        "VITSERVE_REQUEST_TIMEOUT_S": str(COLD_TIMEOUT_S),
        "VITSERVE_CLIENT_RATE": "0",  # one benchmark client: no per-client limits
        "VITSERVE_CLIENT_DECODE_CPU": "0",
        **env,
    }
    spec = ServerSpec(f"vitserve-{model}", "ours", "fp32", command, port, "/readyz", "/classify", settings)
    process = ServerProcess(spec, workdir / f"server-{model}-{port}.log")
    try:
        if not process.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError(f"the server did not start: {process.error}")
        yield spec.url
    finally:
        process.stop()


def classify(client: httpx.Client, model: str, jpeg: bytes) -> tuple[int, float, dict[str, Any]]:
    started = time.monotonic()
    response = client.post("/classify", params={"model": model}, files={"file": jpeg})
    return response.status_code, time.monotonic() - started, response.json()


def cold_starts(plan: Plan, workdir: Path, engine: str, jpegs: Sequence[bytes]) -> dict[str, Any]:
    """Part 1: each size's version loaded on demand by one request."""
    store = ModelStore(workdir / "cold-store")
    publish(store, "base", *size_config("tiny"), seed=0)
    rows = []
    for i, size in enumerate(plan.sizes):
        publish(store, f"cold-{size}", *size_config(size), seed=i + 1)
    env = {"VITSERVE_ON_DEMAND_MODELS": "*"}
    with (
        server(store, "base", env, workdir, engine) as url,
        httpx.Client(base_url=url, timeout=COLD_TIMEOUT_S) as client,
    ):
        startup_used = client.get("/models").json()["memory"]["used_bytes"]
        for size in plan.sizes:
            status, first_s, _ = classify(client, f"cold-{size}", jpegs[0])
            warm = [classify(client, f"cold-{size}", jpeg)[1] for jpeg in jpegs[1:4]]
            info = client.get(f"/models/cold-{size}").json()["versions"][0]
            config = size_config(size)[0]
            rows.append(
                {
                    "model": size,
                    "params_m": round(_params(config) / 1e6, 2),
                    "status": status,
                    "cold_start_s": info["cold_start_s"],
                    "first_request_s": round(first_s, 3),
                    "warm_request_ms": round(float(np.median(warm)) * 1e3, 1),
                    "memory_mib": round((info["memory_bytes"] or 0) / MIB, 1),
                }
            )
    return {"startup_used_bytes": startup_used, "rows": rows}


def _params(config: ViTConfig) -> int:
    from vitserve.service.lifecycle.residency import param_count

    return param_count(config)


async def zipf_traffic(plan: Plan, workdir: Path, engine: str, jpegs: Sequence[bytes], cold: dict[str, Any]) -> dict:
    """Part 2: Zipf traffic over ``plan.models`` versions under a budget for ``plan.fits`` loaded on demand."""
    store = ModelStore(workdir / "zipf-store")
    names = [f"zipf-{i:02d}" for i in range(plan.models)]
    for i, name in enumerate(names):
        publish(store, name, *size_config("tiny"), seed=100 + i)
    per_version = next(r for r in cold["rows"] if r["model"] == "tiny")["memory_mib"] * MIB
    # The served version costs what the first load did (the engine libraries' set-up included); the margin covers
    # what one tiny version's measurement varies by.
    budget = int(cold["startup_used_bytes"] + plan.fits * per_version * 1.25)
    env = {"VITSERVE_ON_DEMAND_MODELS": "*", "VITSERVE_MEMORY_BUDGET": str(budget), "VITSERVE_REQUEST_TIMEOUT_S": "60"}
    rng = np.random.default_rng(24)
    weights = np.array([1 / rank**ZIPF_S for rank in range(1, plan.models + 1)])
    arrivals = np.cumsum(rng.exponential(1 / plan.rate, size=int(plan.rate * plan.seconds * 2)))
    arrivals = arrivals[arrivals < plan.seconds]
    picks = [names[i] for i in rng.choice(plan.models, size=len(arrivals), p=weights / weights.sum())]
    with server(store, names[0], env, workdir, engine) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            memory: list[dict[str, int]] = []
            sampler = asyncio.create_task(_sample_memory(client, memory))
            started = time.monotonic()
            results = await asyncio.gather(
                *(
                    _timed(client, name, jpegs[i % len(jpegs)], started + at)
                    for i, (at, name) in enumerate(zip(arrivals, picks, strict=True))
                )
            )
            elapsed = time.monotonic() - started
            sampler.cancel()
            listing = (await client.get("/models")).json()
            metrics = (await client.get("/metrics")).text
    return _zipf_summary(results, elapsed, listing, metrics, memory, budget, names[0])


async def _timed(client: httpx.AsyncClient, model: str, jpeg: bytes, at: float) -> tuple[str, int, str, float]:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    started = time.monotonic()
    try:
        response = await client.post("/classify", params={"model": model}, files={"file": jpeg})
        code = "ok" if response.status_code == 200 else response.json()["error"]["code"]
        return model, response.status_code, code, time.monotonic() - started
    except httpx.HTTPError as err:
        return model, 0, type(err).__name__, time.monotonic() - started


async def _sample_memory(client: httpx.AsyncClient, into: list[dict[str, int]]) -> None:
    while True:
        with contextlib.suppress(httpx.HTTPError):
            into.append((await client.get("/models")).json()["memory"])
        await asyncio.sleep(1.0)


def _zipf_summary(
    results: list[tuple[str, int, str, float]],
    elapsed: float,
    listing: dict[str, Any],
    metrics: str,
    memory: list[dict[str, int]],
    budget: int,
    hottest: str,
) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name in ("vitserve_model_evictions_total", "vitserve_cold_start_seconds_sum"):
                totals[sample.name] += sample.value
            elif sample.name == "vitserve_cold_start_seconds_count":
                totals["cold_starts"] += sample.value
            elif sample.name == "vitserve_model_loads_total" and sample.labels.get("cause") == "demand":
                totals["loads_on_demand"] += sample.value
    versions = [v for m in listing["models"] for v in m["versions"]]
    hits, misses = sum(v["hits"] for v in versions), sum(v["misses"] for v in versions)
    ok = [s for _, status, _, s in results if status == 200]
    hot = [s for model, status, _, s in results if status == 200 and model == hottest]
    return {
        "requests": len(results),
        "answers": dict(Counter(code for _, _, code, _ in results)),
        "throughput_per_s": round(len(ok) / elapsed, 2),
        "p50_ms": _ms(ok, 50),
        "p99_ms": _ms(ok, 99),
        "hottest_p99_ms": _ms(hot, 99),
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "loads_on_demand": int(totals["loads_on_demand"]),
        "evictions": int(totals["vitserve_model_evictions_total"]),
        "mean_cold_start_s": round(totals["vitserve_cold_start_seconds_sum"] / max(1, totals["cold_starts"]), 3),
        "budget_mib": round(budget / MIB, 1),
        "max_used_mib": round(max((m["used_bytes"] for m in memory), default=0) / MIB, 1),
        "max_process_rss_mib": round(max((m["process_rss_bytes"] for m in memory), default=0) / MIB, 1),
    }


def _ms(samples: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(samples, q)) * 1e3, 1) if samples else None


async def cache_effect(plan: Plan, workdir: Path, engine: str, jpegs: Sequence[bytes]) -> list[dict[str, Any]]:
    """Part 3: the same closed-loop load at 0, 10 and 50 % duplicates, with the cache on and off."""
    store = ModelStore(workdir / "cache-store")
    publish(store, "cached", *size_config("tiny"), seed=7)
    rows = []
    for cache in (True, False):
        env = {"VITSERVE_RESULT_CACHE_MODELS": "cached" if cache else ""}
        with server(store, "cached", env, workdir, engine) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                for fraction in (0.0, 0.1, 0.5):
                    row = await _closed_loop(client, plan, jpegs, fraction)
                    rows.append({"cache": cache, "duplicates": fraction, **row})
    return rows


async def _closed_loop(
    client: httpx.AsyncClient, plan: Plan, jpegs: Sequence[bytes], fraction: float
) -> dict[str, Any]:
    sent: list[bytes] = []
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    rng = random.Random(int(fraction * 100))
    stop_at = time.monotonic() + plan.cache_seconds

    async def one_client() -> None:
        while time.monotonic() < stop_at:
            if sent and rng.random() < fraction:
                body = rng.choice(sent)
            else:  # unique bytes, the same picture: a JPEG decoder ignores what follows its end marker
                body = jpegs[len(sent) % len(jpegs)] + f"unique-{len(sent)}-{rng.random()}".encode()
                sent.append(body)
            started = time.monotonic()
            response = await client.post("/classify", params={"model": "cached"}, files={"file": body})
            latencies.append(time.monotonic() - started)
            timings = response.json()["results"][0]["timings"] if response.status_code == 200 else {}
            outcomes[timings.get("cache", "inferred") if timings else f"http {response.status_code}"] += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(plan.cache_clients)))
    elapsed = time.monotonic() - started
    answered = outcomes["hit"] + outcomes["shared"]
    return {
        "images_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "cache_answered": round(answered / max(1, sum(outcomes.values())), 4),
        "outcomes": dict(outcomes),
    }


PARTS = ("cold", "zipf", "cache")


def run_many_models_bench(
    out: Path, *, full: bool = False, engine: str = "auto", parts: Sequence[str] = PARTS
) -> dict[str, Any]:
    """The ``parts`` asked for (Zipf needs the cold starts: its budget comes from them); writes many_models.json
    and many_models.md into ``out`` and returns the payload."""
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.onnx_engine import default_threads

    plan = FULL if full else QUICK
    jpegs = realistic_jpegs()
    cold: dict[str, Any] = {}
    zipf: dict[str, Any] = {}
    cache: list[dict[str, Any]] = []
    with bench_workdir() as workdir:
        if "cold" in parts or "zipf" in parts:
            cold = cold_starts(plan if "cold" in parts else QUICK, workdir, engine, jpegs)
        if "zipf" in parts:
            zipf = asyncio.run(zipf_traffic(plan, workdir, engine, jpegs, cold))
        if "cache" in parts:
            cache = asyncio.run(cache_effect(plan, workdir, engine, jpegs))
    payload = {
        "benchmark": "many-models",
        "mode": "full" if full else "quick",
        "engine": engine,
        "plan": plan.__dict__,
        "zipf_s": ZIPF_S,
        "environment": report.environment(default_threads()),
        "cold_start": cold,
        "zipf": zipf,
        "cache": cache,
    }
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "many_models.json", payload)
    (out / "many_models.md").write_text(render(payload), encoding="utf-8")
    return payload


def render(payload: dict[str, Any]) -> str:
    text = ""
    if payload["cold_start"]:
        text += _render_cold(payload)
    if payload["zipf"]:
        text += _render_zipf(payload)
    if payload["cache"]:
        text += _render_cache(payload)
    return text


def _render_cold(payload: dict[str, Any]) -> str:
    cold_rows = [
        [r["model"], r["params_m"], r["cold_start_s"], r["first_request_s"], r["warm_request_ms"], r["memory_mib"]]
        for r in payload["cold_start"]["rows"]
    ]
    text = "## Cold start by model size (loaded on demand by one request)\n\n"
    return text + report.markdown_table(
        ["model", "params (M)", "cold start (s)", "first request (s)", "warm request (ms)", "memory (MiB)"], cold_rows
    )


def _render_zipf(payload: dict[str, Any]) -> str:
    plan, zipf = payload["plan"], payload["zipf"]
    text = (
        f"\n## Zipf traffic: {plan['models']} models, a budget for {plan['fits']} besides the served one\n\n"
        f"s = {payload['zipf_s']}, {plan['rate']:g} requests/s for {plan['seconds']:g} s (Poisson arrivals).\n\n"
    )
    keys = ["throughput_per_s", "p50_ms", "p99_ms", "hottest_p99_ms", "hit_rate", "loads_on_demand", "evictions"]
    keys += ["mean_cold_start_s", "budget_mib", "max_used_mib", "max_process_rss_mib"]
    text += report.markdown_table(["measure", "value"], [[k, zipf[k]] for k in keys])
    return text + f"\nAnswers: {zipf['answers']}\n"


def _render_cache(payload: dict[str, Any]) -> str:
    text = f"\n## The duplicate-image cache ({payload['plan']['cache_clients']} clients)\n\n"
    cache_rows = [
        [
            "on" if r["cache"] else "off",
            f"{r['duplicates']:.0%}",
            r["images_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            f"{r['cache_answered']:.0%}",
        ]
        for r in payload["cache"]
    ]
    text += report.markdown_table(
        ["cache", "duplicates", "images/s", "p50 (ms)", "p99 (ms)", "answered by the cache"], cache_rows
    )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny models, short runs (the default)")
    size.add_argument("--full", action="store_true", help="ViT-S and ViT-B cold starts, 20 models, longer runs")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--engine", default="auto", help="the server's engine (default auto)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    run_many_models_bench(args.out, full=args.full, engine=args.engine, parts=args.parts)
    print((args.out / "many_models.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
