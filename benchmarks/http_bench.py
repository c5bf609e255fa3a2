"""End-to-end HTTP benchmark: a real ``vitserve serve`` process, real JPEGs, a concurrency sweep.

    python -m vitserve.benchmarks.http_bench --quick              # tiny model
    python -m vitserve.benchmarks.http_bench --full --out DIR     # ViT-B/16

For each concurrency (1, 4, 16, 64) clients POST 500×375 JPEGs (scikit-image's photographs) to /classify
over 127.0.0.1 and we record throughput, p50/p95/p99 latency and the mean batch size the server achieved
(from /metrics). Then, with the server stopped, the same engine runs in-process on preprocessed images at
the same batch sizes: e2e ÷ engine-only says what HTTP, decoding and batching cost. Also reports the
preprocessing time of one JPEG on one core. Writes http.json, http.md and http.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vitserve.benchmarks import report
from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
from vitserve.benchmarks.timing import Budget, measure, percentile_ms
from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore
from vitserve.vit.config import DataConfig, get_variant

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 4, 16, 64)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field")
JPEG_SIZE = (500, 375)


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    """The installed ``vitserve`` entry point beside this interpreter, else the same CLI as a module."""
    script = Path(sys.executable).parent / "vitserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vitserve.admin.main"]


@contextlib.contextmanager
def running_server(
    store: ModelStore,
    card: Card,
    *,
    engine: str,
    max_batch_size: int,
    threads: int,
    log_path: Path,
    max_delay_ms: float = 0.0,
) -> Iterator[str]:
    """Start ``vitserve serve`` on a free 127.0.0.1 port, wait until /readyz, yield its URL, stop it."""
    port = free_port()
    command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store.root)]
    command += ["--model", card.ref, "--engine", engine, "--max-batch-size", str(max_batch_size)]
    command += ["--queue-size", "256", "--max-delay-ms", str(max_delay_ms), "--log-level", "WARNING"]
    env = {**os.environ, "VITSERVE_ENGINE_THREADS": str(threads), "VITSERVE_REQUEST_TIMEOUT_S": "300"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_ready(url, process, timeout_s=900)
        except (RuntimeError, TimeoutError) as err:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{err}; its log ends:\n{tail}") from err
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vitserve serve exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"vitserve serve was not ready within {timeout_s} s")


def batch_counters(url: str) -> tuple[float, float]:
    """(images, model calls) so far, from the vitserve_batch_size histogram on /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    images = calls = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "vitserve_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    images += sample.value
                elif sample.name.endswith("_count"):
                    calls += sample.value
    return images, calls


async def sweep_level(url: str, jpegs: Sequence[bytes], concurrency: int, requests: int) -> dict[str, Any]:
    """``concurrency`` clients send ``requests`` single-image requests in all; latency of each, throughput."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            files = {"file": (f"photo{i}.jpg", jpegs[i % len(jpegs)], "image/jpeg")}
            t0 = time.perf_counter()
            response = await client.post(f"{url}/classify", files=files, params={"top_k": 5})
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


def engine_only(
    store: ModelStore, card: Card, engine: str, batch_sizes: Sequence[int], jpegs: Sequence[bytes], threads: int
) -> dict[int, float]:
    """images/s of the server's engine in-process, on preprocessed real images, per batch size."""
    from vitserve.runtime.engine import EngineOptions, build_engine
    from vitserve.vit.preprocess import preprocess

    options = EngineOptions(batch_sizes=tuple(sorted(set(batch_sizes))), threads=threads)
    runner = build_engine(engine, card, store, options)
    runner.warmup()
    images = preprocess(list(jpegs), card.data)
    result = {}
    for batch in batch_sizes:
        x = np.concatenate([images] * (batch // len(images) + 1))[:batch]
        result[batch] = measure(functools.partial(runner.run, x), batch, Budget(warmup=1, min_iters=3, min_time_s=2.0))[
            "images_per_s"
        ]
    return result


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
) -> dict[str, Any]:
    """Run the sweep against a fresh server and write http.json/.md/.png into ``out``; returns the payload."""
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.engine import resolve_kind
    from vitserve.runtime.onnx_engine import default_threads

    threads = threads or default_threads()
    with bench_workdir() as workdir:
        variant = get_variant("vit_base_patch16_224")
        config, data = (variant.config, variant.data) if full else (QUICK_CONFIG, DataConfig(img_size=64))
        store, card = bench_store(config, data, workdir / "store")
        kind = resolve_kind(engine, "CPU")
        jpegs = realistic_jpegs()
        levels = []
        with running_server(
            store,
            card,
            engine=kind,
            max_batch_size=max_batch_size,
            threads=threads,
            log_path=workdir / "serve.log",
            max_delay_ms=max_delay_ms,
        ) as url:
            asyncio.run(sweep_level(url, jpegs, 2, 4))  # first requests: connection set-up, lazy imports
            for c in concurrency:
                before = batch_counters(url)
                level = asyncio.run(sweep_level(url, jpegs, c, max(c * requests_per_client, 8)))
                after = batch_counters(url)
                calls = after[1] - before[1]
                level["mean_batch_size"] = (after[0] - before[0]) / calls if calls else None
                logger.info(
                    "concurrency %3d: %.2f img/s, p50 %.0f ms, mean batch %s",
                    c,
                    level["images_per_s"],
                    level["p50_ms"],
                    level["mean_batch_size"],
                )
                levels.append(level)
        sizes = sorted({max_batch_size} | {max(1, round(lv["mean_batch_size"] or 1)) for lv in levels})
        engine_rates = engine_only(store, card, kind, sizes, jpegs, threads)
        for level in levels:
            batch = max(1, round(level["mean_batch_size"] or 1))
            level["engine_only_images_per_s"] = engine_rates[batch]
            level["e2e_over_engine"] = level["images_per_s"] / engine_rates[batch]
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
            "engine_only_images_per_s": {str(k): v for k, v in engine_rates.items()},
            "levels": levels,
            "saturation": {
                "concurrency": saturated["concurrency"],
                "e2e_images_per_s": saturated["images_per_s"],
                "engine_only_at_max_batch": engine_rates[max_batch_size],
                "e2e_over_engine_at_max_batch": saturated["images_per_s"] / engine_rates[max_batch_size],
            },
        }
        _write_outputs(out, payload)
        return payload


def _write_outputs(out: Path, payload: dict[str, Any]) -> None:
    report.write_json(out / "http.json", payload)
    headers = ["concurrency", "img/s", "p50 ms", "p95 ms", "p99 ms", "mean batch", "engine-only img/s", "e2e/engine"]
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
        f"- preprocessing one {payload['jpeg']['size'][0]}×{payload['jpeg']['size'][1]} JPEG on one core: "
        f"{payload['preprocess_ms_one_core']:.2f} ms (median)\n"
    )
    (out / "http.md").write_text(text, encoding="utf-8")
    levels = payload["levels"]
    report.line_plot(
        out / "http.png",
        {
            "throughput (img/s)": ([lv["concurrency"] for lv in levels], [lv["images_per_s"] for lv in levels]),
            "engine-only at achieved batch": (
                [lv["concurrency"] for lv in levels],
                [lv["engine_only_images_per_s"] for lv in levels],
            ),
        },
        title=f"{payload['model']} over HTTP ({payload['engine']})",
        xlabel="concurrent clients",
        ylabel="images/s",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny model (the default)")
    size.add_argument("--full", action="store_true", help="ViT-B/16 at 224")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON/MD/PNG")
    parser.add_argument("--engine", default="auto", choices=["auto", "mindspore", "onnxruntime", "openvino"])
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the CPUs available)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=0.0, help="the server's batch wait (default 0)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.benchmarks.http_bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    payload = run_http_bench(
        args.out,
        full=args.full,
        engine=args.engine,
        threads=args.threads,
        concurrency=args.concurrency,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
    )
    print((args.out / "http.md").read_text(encoding="utf-8"))
    print(f"environment: {payload['environment']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
