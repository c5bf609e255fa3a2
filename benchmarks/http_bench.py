"""End-to-end HTTP benchmark: a real ``vitserve serve`` process, real JPEGs, a concurrency sweep.

    python -m vitserve.benchmarks.http_bench --quick              # tiny model
    python -m vitserve.benchmarks.http_bench --full --out DIR     # ViT-B/16
    python -m vitserve.benchmarks.http_bench --peers triton --full --out DIR   # ours and Triton on /v2 (triton_bench)

For each concurrency (1, 4, 16, 64) clients POST 500×375 JPEGs (scikit-image's photographs) to /classify
over 127.0.0.1 and we record throughput, p50/p95/p99 latency and the mean batch size the server achieved
(from /metrics). Right after each level, with every server paused, the same engine runs in this process on
preprocessed images at the batch size the level formed: e2e ÷ engine-only says what HTTP, decoding and batching
cost. The server's own timing of its model calls (/metrics) gives the same figure without the drift between the
two: the share of the level's wall time its engine was busy. Also reports the preprocessing time of one JPEG on
one core, and /healthz latency while 16 and 64 clients load the server.

In the same run, on the same JPEGs and concurrency levels (``--no-peers`` leaves them out): our server at
reduced precision (dynamic int8 on ONNX Runtime; static int8 on OpenVINO, quantised first with NNCF and
calibrated on the same photographs; bf16 where the CPU has it) and the peer servers (``peer_servers``: LitServe with
PyTorch or OpenVINO, a plain FastAPI + PyTorch app, LitServe with a no-op model), each serving the same
weights with the same preprocessing and checked against our answer before it is timed (``http_peers``). All
servers start together and are measured one at a time, the others paused (``server_fleet``), level by level:
at each concurrency every server in turn, so that a change in the shared machine's speed during the run falls
on all of them alike. Writes http.json, http.md and http.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vitserve.benchmarks import http_peers, report
from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
from vitserve.benchmarks.peer_servers import HEALTH_PATH, PEER_KINDS, PREDICT_PATH, REQUEST_TIMEOUT_S, PeerKind
from vitserve.benchmarks.server_fleet import ServerProcess, ServerSpec, measuring, server_fleet
from vitserve.benchmarks.timing import Budget, measure, percentile_ms
from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore
from vitserve.runtime.engine import ENGINE_CHOICES
from vitserve.vit.config import DataConfig, get_variant

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 4, 16, 64)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field")
JPEG_SIZE = (500, 375)
READY_TIMEOUT_S = 1800.0  # every server's start-up, together (ViT-B/16 exports and compiles on 2 cores)


def realistic_jpegs(size: tuple[int, int] = JPEG_SIZE, quality: int = 90) -> list[bytes]:
    """scikit-image's sample photographs resized to ``size`` (a typical phone/web picture) as JPEG bytes."""
    import skimage.data
    from PIL import Image

    images = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        image = Image.fromarray(array).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        images.append(buffer.getvalue())
    return images


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free 127.0.0.1 ports: all are held at once while chosen, so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def serve_command() -> list[str]:
    """The installed ``vitserve`` entry point beside this interpreter, else the same CLI as a module."""
    script = Path(sys.executable).parent / "vitserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vitserve.admin.main"]


def ours_spec(
    store: ModelStore,
    card: Card,
    *,
    engine: str,
    precision: str,
    max_batch_size: int,
    threads: int,
    port: int,
    max_delay_ms: float = 0.0,
) -> ServerSpec:
    """``vitserve serve`` on 127.0.0.1:``port`` with ``engine`` at ``precision`` and ``threads`` engine threads."""
    command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store.root)]
    command += ["--model", card.ref, "--engine", engine, "--engine-precision", precision]
    command += ["--max-batch-size", str(max_batch_size), "--queue-size", "256", "--max-delay-ms", str(max_delay_ms)]
    command += ["--log-level", "WARNING"]
    # int8 runs on ONNX Runtime whichever CPU engine is asked for (runtime/openvino_engine.py hands it over).
    ran = "onnxruntime" if precision == "int8" and engine != "mindspore" else engine
    return ServerSpec(
        label=f"vitserve[{ran}] {precision}",
        role="ours",
        precision=precision,
        command=command,
        port=port,
        health_path="/readyz",
        predict_path="/classify",
        env={
            "VITSERVE_ENGINE_THREADS": str(threads),
            "VITSERVE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            # One load generator stands for many clients: no per-client rate (the peers have none either).
            "VITSERVE_CLIENT_RATE": "0",
        },
    )


def peer_spec(kind: PeerKind, store: ModelStore, card: Card, threads: int, port: int, workdir: Path) -> ServerSpec:
    """A peer server process (``peer_servers``) serving ``card``'s weights on 127.0.0.1:``port``."""
    scratch = workdir / kind.name  # its own: servers start together, and two must not export into one file
    scratch.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "vitserve.benchmarks.peer_servers", "--kind", kind.name, "--port", str(port)]
    command += ["--store", str(store.root), "--model", card.ref, "--threads", str(threads), "--workdir", str(scratch)]
    return ServerSpec(
        label=kind.label,
        role=kind.role,
        precision=kind.precision,
        command=command,
        port=port,
        health_path=HEALTH_PATH,
        predict_path=PREDICT_PATH,
    )


def batch_counters(url: str) -> tuple[float, float, float]:
    """(images, model calls, seconds in model calls) so far, from the server's batch histograms on /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    images, calls, seconds = "vitserve_batch_size_sum", "vitserve_batch_size_count", "vitserve_batch_seconds_sum"
    totals = dict.fromkeys((images, calls, seconds), 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals[images], totals[calls], totals[seconds]


async def sweep_level(
    url: str, jpegs: Sequence[bytes], concurrency: int, requests: int, path: str = "/classify"
) -> dict[str, Any]:
    """``concurrency`` clients send ``requests`` single-image requests in all (a multipart ``file`` and ``top_k``
    5, which every server here reads) to ``url + path``; latency of each, throughput."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            files = {"file": (f"photo{i}.jpg", jpegs[i % len(jpegs)], "image/jpeg")}
            t0 = time.perf_counter()
            response = await client.post(f"{url}{path}", files=files, data={"top_k": "5"})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failures[str(response.status_code)] = failures.get(str(response.status_code), 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": requests,
        "elapsed_s": elapsed,
        "ok": len(latencies),
        "failures": failures,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
    }


def preprocess_ms(jpegs: Sequence[bytes], data: DataConfig, repeats: int = 5) -> float:
    """Median ms to decode + resize + crop + normalise one JPEG, on one core (BLAS/thread pools at 1)."""
    from threadpoolctl import threadpool_limits

    from vitserve.vit.preprocess import preprocess

    samples = []
    with threadpool_limits(1):
        for _ in range(repeats):
            for jpeg in jpegs:
                t0 = time.perf_counter()
                preprocess([jpeg], data)
                samples.append(time.perf_counter() - t0)
    return percentile_ms(samples, 50)


class EngineOnly:
    """The server's engine in this process, on the benchmark's preprocessed JPEGs. Each level's engine-only rate is
    measured right after our server's turn at that level (every server paused), so e2e ÷ engine compares figures
    taken seconds apart on a machine whose speed drifts, not a whole sweep apart."""

    def __init__(
        self, store: ModelStore, card: Card, engine: str, jpegs: Sequence[bytes], threads: int, max_batch_size: int
    ) -> None:
        from vitserve.runtime.engine import EngineOptions, build_engine
        from vitserve.vit.preprocess import preprocess

        sizes = tuple(sorted({*EngineOptions().batch_sizes, max_batch_size}))  # the sizes a server warms
        self.runner = build_engine(engine, card, store, EngineOptions(batch_sizes=sizes, threads=threads))
        self.runner.warmup()
        self.images = preprocess(list(jpegs), card.data)

    def images_per_s(self, batch: int) -> float:
        x = np.concatenate([self.images] * (batch // len(self.images) + 1))[:batch]
        budget = Budget(warmup=1, min_iters=3, min_time_s=2.0)
        return float(measure(functools.partial(self.runner.run, x), batch, budget)["images_per_s"])


def run_http_bench(
    out: Path,
    *,
    full: bool = False,
    engine: str = "auto",
    threads: int | None = None,
    concurrency: Sequence[int] = CONCURRENCY,
    requests_per_client: int = 4,
    max_batch_size: int = 8,
    max_delay_ms: float = 0.0,
    peers: bool = True,
    peer_requests_per_client: int | None = None,
) -> dict[str, Any]:
    """Run the sweep against a fresh server and write http.json/.md/.png into ``out``; returns the payload.

    With ``peers``, the same run also sweeps our server at reduced precision and the peer servers
    (``peer_servers.PEER_KINDS``), ``peer_requests_per_client`` requests per client each (default: 2 with
    ``--quick``, else ``requests_per_client``), and adds the ``peers`` section.
    """
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.engine import resolve_kind
    from vitserve.runtime.onnx_engine import default_threads

    threads = threads or default_threads()
    per_peer_client = peer_requests_per_client or (requests_per_client if full else 2)
    with bench_workdir() as workdir:
        variant = get_variant("vit_base_patch16_224")
        config, data = (variant.config, variant.data) if full else (QUICK_CONFIG, DataConfig(img_size=64))
        store, card = bench_store(config, data, workdir / "store")
        kind = resolve_kind(engine, "CPU")
        jpegs = realistic_jpegs()
        ours = functools.partial(
            ours_spec,
            store,
            card,
            engine=kind,
            max_batch_size=max_batch_size,
            threads=threads,
            max_delay_ms=max_delay_ms,
        )
        ports = iter(free_ports(1 + len(http_peers.REDUCED) + len(PEER_KINDS)))
        main = ours(precision="fp32", port=next(ports))
        specs: list[ServerSpec] = [main]
        not_started: list[dict[str, Any]] = []
        if peers:
            others, not_started = _other_servers(ours, kind, store, card, threads, ports, workdir, jpegs)
            specs += others
        with server_fleet(specs, workdir, READY_TIMEOUT_S) as servers:
            if servers[0].error:
                raise RuntimeError(servers[0].error)
            with measuring(servers[0]) as url:
                reference = _reference(url, jpegs, card)
            checked = [(server, _check_other(server, jpegs, reference, per_peer_client)) for server in servers[1:]]
            engine_only = EngineOnly(store, card, kind, jpegs, threads, max_batch_size)
            levels = []
            for c in concurrency:  # level by level, every server in turn: a drift in the machine's speed falls on
                with measuring(servers[0]) as url:  # all of them alike; the engine alone right after ours
                    level = _level_ours(url, jpegs, c, requests_per_client)
                _level_engine_only(engine_only, level, max_batch_size)
                levels.append(level)
                for server, row in checked:
                    _level_other(server, row, jpegs, c, per_peer_client)
            rows = [_server_row(main, levels)] + [row for _, row in checked]
        saturated = max(levels, key=lambda lv: lv["images_per_s"])
        payload = {
            "benchmark": "http",
            "mode": "full" if full else "quick",
            "model": card.ref,
            "config": card.config.to_dict(),
            "engine": kind,
            "max_batch_size": max_batch_size,
            "max_delay_ms": max_delay_ms,
            "jpeg": {
                "size": list(JPEG_SIZE),
                "count": len(jpegs),
                "mean_bytes": float(np.mean([len(j) for j in jpegs])),
            },
            "environment": report.environment(threads),
            "preprocess_ms_one_core": preprocess_ms(jpegs, card.data),
            "levels": levels,
            "saturation": {
                "concurrency": saturated["concurrency"],
                "e2e_images_per_s": saturated["images_per_s"],
                "engine_only_at_max_batch": saturated["engine_only_at_max_batch"],
                "e2e_over_engine_at_max_batch": saturated["images_per_s"] / saturated["engine_only_at_max_batch"],
                "engine_busy_share": saturated["engine_busy_share"],
            },
        }
        if peers:
            payload["peers"] = _peers_section(rows + not_started, reference, threads, per_peer_client)
        _write_outputs(out, payload)
        return payload


def _quantise_static(store: ModelStore, card: Card, jpegs: Sequence[bytes]) -> None:
    """``card``'s NNCF int8 IR, calibrated on the benchmark's own photographs: enough for a speed measurement
    (the weights are seeded random ones); a served version's opt-in is calibrated and gated on real data."""
    from vitserve.runtime.export_cache import cached_static_int8
    from vitserve.vit.preprocess import preprocess

    started = time.monotonic()
    cached_static_int8(store, card, preprocess(list(jpegs), card.data))
    logger.info("static int8 quantisation for the int8-static server: %.1f s", time.monotonic() - started)


def _other_servers(
    ours: Callable[..., ServerSpec],
    engine: str,
    store: ModelStore,
    card: Card,
    threads: int,
    ports: Iterator[int],
    workdir: Path,
    jpegs: Sequence[bytes],
) -> tuple[list[ServerSpec], list[dict[str, Any]]]:
    """Our server (``ours(precision=, port=)``, on ``engine``) at each reduced precision and every peer server;
    the rows of those this machine cannot run. ``int8-static`` is quantised first, calibrated on ``jpegs``."""
    from vitserve.benchmarks.runners import Unsupported, require_precision

    specs, skipped = [], []
    for precision in http_peers.REDUCED:
        spec = ours(precision=precision, port=next(ports))
        try:
            if engine == "mindspore" or (precision in ("bf16", "int8-static") and engine != "openvino"):
                raise Unsupported(f"the {engine} engine does not run {precision}")
            require_precision(precision)
        except Unsupported as err:
            skipped.append({"label": spec.label, "role": spec.role, "precision": precision, "skipped": str(err)})
            continue
        if precision == "int8-static":
            _quantise_static(store, card, jpegs)
        specs.append(spec)
    for kind in PEER_KINDS:
        try:
            require_precision(kind.precision)
        except Unsupported as err:
            skipped.append({"label": kind.label, "role": kind.role, "precision": kind.precision, "skipped": str(err)})
            continue
        specs.append(peer_spec(kind, store, card, threads, next(ports), workdir))
    return specs, skipped


def _reference(url: str, jpegs: Sequence[bytes], card: Card) -> dict[str, Any]:
    """Our fp32 server's answer that every other server is checked against: the JPEG, top_k and the answer."""
    asyncio.run(sweep_level(url, jpegs, 2, 4))  # first requests: connection set-up, lazy imports
    index = http_peers.reference_jpeg(url, "/classify", jpegs)
    top_k = min(card.config.num_classes, 100)  # every class our server will return (its max_top_k is 100)
    return {"jpeg": index, "top_k": top_k, "answer": http_peers.classify(url, "/classify", jpegs[index], top_k)}


def _level_ours(url: str, jpegs: Sequence[bytes], concurrency: int, requests_per_client: int) -> dict[str, Any]:
    """One level on our fp32 server: the batch sizes it formed (from /metrics), /healthz polled at 16 and 64."""
    before = batch_counters(url)
    with contextlib.ExitStack() as stack:
        probe = stack.enter_context(http_peers.HealthzProbe(url)) if concurrency in http_peers.HEALTHZ_LEVELS else None
        level = asyncio.run(sweep_level(url, jpegs, concurrency, max(concurrency * requests_per_client, 8)))
    if probe is not None:
        level.update(probe.stats())
    images, calls, seconds = (after - before for after, before in zip(batch_counters(url), before, strict=True))
    level["mean_batch_size"] = images / calls if calls else None
    # The engine as it ran inside the server during this level, from the server's own timing of each model call:
    # e2e ÷ this is the share of the engine's time that went to answering clients, whatever the machine's speed.
    level["engine_in_server_images_per_s"] = images / seconds if seconds else None
    level["engine_busy_share"] = seconds / level["elapsed_s"]
    logger.info(
        "concurrency %3d: %.2f img/s, p50 %.0f ms, mean batch %s, engine busy %.1f %%, /healthz p99 %s ms",
        concurrency,
        level["images_per_s"],
        level["p50_ms"],
        level["mean_batch_size"],
        100 * level["engine_busy_share"],
        level.get("healthz_p99_ms"),
    )
    return level


def _level_engine_only(engine_only: EngineOnly, level: dict[str, Any], max_batch_size: int) -> None:
    """The engine alone at the batch size the level formed on average, and at the largest: e2e ÷ engine."""
    batch = max(1, round(level["mean_batch_size"] or 1))
    level["engine_only_images_per_s"] = rate = engine_only.images_per_s(batch)
    level["engine_only_at_max_batch"] = rate if batch == max_batch_size else engine_only.images_per_s(max_batch_size)
    level["e2e_over_engine"] = level["images_per_s"] / rate
    logger.info("engine alone at batch %d: %.2f img/s (e2e ÷ engine %.3f)", batch, rate, level["e2e_over_engine"])


def _server_row(spec: ServerSpec, levels: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("concurrency", "requests", "ok", "failures", "images_per_s", "p50_ms", "p95_ms", "p99_ms")
    row = {"label": spec.label, "role": spec.role, "precision": spec.precision}
    return {**row, "levels": [{k: lv[k] for k in keys} for lv in levels]}


def _check_other(
    server: ServerProcess, jpegs: Sequence[bytes], reference: dict[str, Any], requests_per_client: int
) -> dict[str, Any]:
    """Warm ``server`` up and check its answer on the reference JPEG against ours; the no-op server is measured
    here, at 1 client, once. A server that failed to start or answers differently is a row with its ``error``
    (and is stopped); otherwise the row its levels are added to."""
    spec = server.spec
    row: dict[str, Any] = {"label": spec.label, "role": spec.role, "precision": spec.precision}
    if server.error:
        return {**row, "error": server.error}
    with _reported(server, row), measuring(server) as url:
        asyncio.run(sweep_level(url, jpegs, 2, 4, spec.predict_path))
        if spec.role == "overhead":
            c = http_peers.LATENCY_CONCURRENCY
            requests = max(c * requests_per_client, 4)
            row["levels"] = [asyncio.run(sweep_level(url, jpegs, c, requests, spec.predict_path))]
            logger.info("%s c=%d: p50 %.1f ms", spec.label, c, row["levels"][0]["p50_ms"])
            server.stop()  # nothing more to measure: its memory is freed
            return row
        answer = http_peers.classify(url, spec.predict_path, jpegs[reference["jpeg"]], reference["top_k"])
        row["check"] = check = http_peers.compare(reference["answer"], answer)
        logger.info("%s: answer on the reference JPEG vs ours: %s", spec.label, check)
        if not check["same_top1"]:
            row["error"] = f"top-1 {check['top1']} differs from ours ({check['top1_ours']}): not timed"
            server.stop()
            return row
        row["levels"] = []
    return row


def _level_other(
    server: ServerProcess, row: dict[str, Any], jpegs: Sequence[bytes], concurrency: int, requests_per_client: int
) -> None:
    """Measure one level on a checked server and add it to ``row`` (a failure replaces the row's levels with its
    ``error`` and stops the server: a failing peer must not sink the whole benchmark)."""
    spec = server.spec
    if "error" in row or spec.role == "overhead" or server.stopped:
        return
    with _reported(server, row), measuring(server) as url:
        requests = max(concurrency * requests_per_client, 4)
        level = asyncio.run(sweep_level(url, jpegs, concurrency, requests, spec.predict_path))
        logger.info("%s c=%d: %.2f img/s, p50 %.1f ms", spec.label, concurrency, level["images_per_s"], level["p50_ms"])
        row["levels"].append(level)


@contextlib.contextmanager
def _reported(server: ServerProcess, row: dict[str, Any]) -> Iterator[None]:
    """An exception while measuring ``server`` becomes its row's ``error`` (with the end of its log)."""
    try:
        yield
    except Exception as err:
        logger.exception("%s failed", server.spec.label)
        row.pop("levels", None)
        row["error"] = f"{type(err).__name__}: {err}; its log ends:\n{server.log_tail()}"
        server.stop()


def _peers_section(
    rows: list[dict[str, Any]], reference: dict[str, Any], threads: int, requests_per_client: int
) -> dict[str, Any]:
    noop = next((r for r in rows if r["role"] == "overhead" and r.get("levels")), None)
    return {
        "threads": threads,
        "reference_jpeg": reference["jpeg"],
        "requests_per_client": requests_per_client,
        "servers": rows,
        "ratios": http_peers.ratios(rows),
        "litserve_noop_p50_ms_at_1": noop["levels"][0]["p50_ms"] if noop else None,
    }


def _write_outputs(out: Path, payload: dict[str, Any]) -> None:
    report.write_json(out / "http.json", payload)
    headers = ["concurrency", "img/s", "p50 ms", "p95 ms", "p99 ms", "mean batch", "engine-only img/s", "e2e/engine"]
    headers += ["engine in server img/s", "engine busy", "/healthz p50/p99 ms"]
    rows = [
        [
            lv["concurrency"],
            lv["images_per_s"],
            lv["p50_ms"],
            lv["p95_ms"],
            lv["p99_ms"],
            lv["mean_batch_size"],
            lv["engine_only_images_per_s"],
            lv["e2e_over_engine"],
            lv["engine_in_server_images_per_s"],
            f"{100 * lv['engine_busy_share']:.1f} %",
            f"{lv['healthz_p50_ms']:.1f} / {lv['healthz_p99_ms']:.1f}" if "healthz_p50_ms" in lv else None,
        ]
        for lv in payload["levels"]
    ]
    text = report.markdown_table(headers, rows)
    sat = payload["saturation"]
    text += (
        f"\n- engine: {payload['engine']}, max batch {payload['max_batch_size']}, "
        f"{payload['environment']['threads']} threads\n"
        f"- saturation (concurrency {sat['concurrency']}): e2e ÷ engine-only at batch {payload['max_batch_size']} = "
        f"{sat['e2e_over_engine_at_max_batch']:.3f}\n"
        "- engine in server: images ÷ the server's own timing of its model calls during the level; engine busy: "
        "that time ÷ the level's wall time (= e2e ÷ engine in server), immune to the machine's drift between the "
        "server's turn and the engine-only one\n"
        f"- preprocessing one {payload['jpeg']['size'][0]}×{payload['jpeg']['size'][1]} JPEG on one core: "
        f"{payload['preprocess_ms_one_core']:.2f} ms (median)\n"
    )
    if "peers" in payload:
        text += http_peers.markdown(payload["peers"], [lv["concurrency"] for lv in payload["levels"]])
    (out / "http.md").write_text(text, encoding="utf-8")
    levels = payload["levels"]
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
        "throughput (img/s)": ([lv["concurrency"] for lv in levels], [lv["images_per_s"] for lv in levels]),
        "engine-only at achieved batch": (
            [lv["concurrency"] for lv in levels],
            [lv["engine_only_images_per_s"] for lv in levels],
        ),
    }
    for row in payload.get("peers", {}).get("servers", [])[1:]:  # [0] is this server, plotted above
        if row["role"] != "overhead" and row.get("levels"):
            series[row["label"]] = (
                [lv["concurrency"] for lv in row["levels"]],
                [lv["images_per_s"] for lv in row["levels"]],
            )
    report.line_plot(
        out / "http.png",
        series,
        title=f"{payload['model']} over HTTP ({payload['engine']})",
        xlabel="concurrent clients",
        ylabel="images/s",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny model (the default)")
    size.add_argument("--full", action="store_true", help="ViT-B/16 at 224")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON/MD/PNG")
    parser.add_argument("--engine", default="auto", choices=ENGINE_CHOICES)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the CPUs available)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=None, help="default: 1 4 16 64 (with --peers triton: 1 16)"
    )
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=0.0, help="the server's batch wait (default 0)")
    parser.add_argument(
        "--no-peers", action="store_true", help="our fp32 server only (no reduced precision, no peer servers)"
    )
    parser.add_argument(
        "--requests-per-client", type=int, default=4, help="requests per client per level (at least 8 per level)"
    )
    parser.add_argument(
        "--peer-requests-per-client",
        type=int,
        default=None,
        help="requests per client per level for every server but ours in fp32 (default: 2 with --quick, else as ours)",
    )
    triton = parser.add_argument_group(
        "Triton (--peers triton)", "ours and Triton over the Open Inference Protocol (benchmarks/triton_bench.py)"
    )
    triton.add_argument(
        "--peers",
        choices=["default", "triton"],
        default="default",
        help="default: LitServe and FastAPI over /classify; triton: Triton Inference Server, both on /v2, "
        "one tritonclient load generator, closed loop (needs scripts/install_triton_peer.sh)",
    )
    triton.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16", "int8-static"],
        choices=["fp32", "bf16", "int8-static"],
        help="the precisions both servers run (bf16 only where the CPU has it)",
    )
    triton.add_argument("--seconds", type=float, default=20.0, help="measured seconds per level and server")
    triton.add_argument("--warmup-s", type=float, default=5.0, help="closed-loop load before each measured level")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.benchmarks.http_bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.peers == "triton":
        return _main_triton(args)
    payload = run_http_bench(
        args.out,
        full=args.full,
        engine=args.engine,
        threads=args.threads,
        concurrency=args.concurrency or CONCURRENCY,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        peers=not args.no_peers,
        requests_per_client=args.requests_per_client,
        peer_requests_per_client=args.peer_requests_per_client,
    )
    print((args.out / "http.md").read_text(encoding="utf-8"))
    print(f"environment: {payload['environment']}")
    return 0


def _main_triton(args: argparse.Namespace) -> int:
    from vitserve.benchmarks.triton_bench import CONCURRENCY as TRITON_CONCURRENCY
    from vitserve.benchmarks.triton_bench import TritonPeerUnavailable, run_triton_bench

    concurrency = args.concurrency or TRITON_CONCURRENCY
    try:
        payload = run_triton_bench(
            args.out,
            full=args.full,
            engine=args.engine,
            threads=args.threads,
            precisions=args.precisions,
            concurrency=concurrency,
            seconds=args.seconds,
            warmup_s=args.warmup_s,
            max_batch_size=args.max_batch_size,
        )
    except TritonPeerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print((args.out / "triton.md").read_text(encoding="utf-8"))
    print(f"environment: {payload['environment']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
