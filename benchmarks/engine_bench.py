"""Engine benchmark: images/s and p50/p99 ms per batch, our engines beside the peers, on the same weights.

    python -m vitserve.benchmarks.engine_bench --quick            # tiny model, about a minute
    python -m vitserve.benchmarks.engine_bench --full --out DIR   # ViT-B/16 at 224 (tens of minutes on 2 cores)

Every engine is held to ``--threads`` threads. Also measures this machine's GEMM ceiling per dtype (the model's
MLP GEMM as a one-MatMul OpenVINO model in fp32, bf16 where the CPU has it, and int8; fp32 also through numpy's
BLAS and torch; the best of each dtype), and reports each result's share of the ceiling for the precision it
actually ran. Writes engine.json, engine.md and engine.png to --out.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.benchmarks import report
from vitserve.benchmarks.flops import gemm_gflops, int8_gemm_gops, openvino_gemm_gops, vit_macs
from vitserve.benchmarks.runners import RUNNERS, BenchContext, RunFn, RunnerSpec, Unsupported, bench_workdir
from vitserve.benchmarks.timing import Budget, measure_interleaved
from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore
from vitserve.vit.config import DataConfig, ViTConfig, get_variant

logger = logging.getLogger(__name__)

QUICK_CONFIG = ViTConfig(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=10)
QUICK_BUDGET = Budget(warmup=1, min_iters=2, min_time_s=0.2, max_iters=20)
FULL_BUDGET = Budget(warmup=1, min_iters=3, min_time_s=6.0, max_iters=30)
BATCH_SIZES = (1, 8, 32)


def bench_store(config: ViTConfig, data: DataConfig, root: Path, seed: int = 0) -> tuple[ModelStore, Card]:
    """A store holding one version with seeded random weights (std 0.02, like a trained ViT's scale)."""
    from vitserve.vit.checkpoint import state_dict
    from vitserve.vit.model import create_model

    rng = np.random.default_rng(seed)
    state = {
        k: (rng.standard_normal(v.shape) * 0.02).astype(np.float32) for k, v in state_dict(create_model(config)).items()
    }
    for name in state:
        if name.endswith(".gamma"):
            state[name] = np.ones_like(state[name])
    store = ModelStore(root)
    labels = [f"class_{i}" for i in range(config.num_classes)]
    card = store.publish("bench-vit", state, config, data, labels, lineage={"source": "random (benchmark)"})
    return store, card


def set_thread_limits(threads: int) -> None:
    """Entry-point global state: MindSpore's CPU kernels and the BLAS pools share ``threads``."""
    import mindspore as ms
    from threadpoolctl import threadpool_limits

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    # MindSpore's CPU thread pool defaults to 30 threads whatever the core count.
    ms.device_context.cpu.op_tuning.threads_num(threads)
    threadpool_limits(threads)


def build_runner(
    spec: RunnerSpec, ctx: BenchContext, x_check: np.ndarray, reference: np.ndarray | None
) -> tuple[RunFn | None, dict[str, Any], np.ndarray | None]:
    """Build ``spec``'s runner and compare its logits for ``x_check`` with ``reference``.

    Returns (the run function or None, its result fields: setup time, logit difference, or why it was
    skipped, the logits).
    """
    base: dict[str, Any] = {"engine": spec.engine, "dtype": spec.dtype, "role": spec.role, "graph": spec.graph}
    base["label"] = spec.label
    started = time.perf_counter()
    try:
        built = spec.build(ctx)
        run = built.run
        check = run(x_check)
    except Unsupported as err:
        logger.info("skipping %s: %s", spec.label, err)
        return None, {**base, "skipped": str(err)}, None
    except Exception as err:  # a failing peer must not sink the whole benchmark; it is reported
        logger.exception("%s failed to build", spec.label)
        return None, {**base, "error": f"{type(err).__name__}: {err}"}, None
    base["setup_s"] = time.perf_counter() - started
    base["precision"] = built.precision  # what the runtime says it computed (tests judge logits by it)
    if reference is not None:
        base["max_abs_diff_vs_mindspore"] = float(np.max(np.abs(check - reference)))
    logger.info("built %s in %.1f s", spec.label, base["setup_s"])
    return run, base, check


def bench_all(
    runners: dict[str, tuple[RunFn, dict[str, Any]]], batch_sizes: Sequence[int], shape: tuple[int, ...], budget: Budget
) -> list[dict[str, Any]]:
    """Every runner at every batch size, interleaved round-robin (see ``measure_interleaved``)."""
    rows = []
    rng = np.random.default_rng(1)
    for batch in batch_sizes:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        calls = {label: functools.partial(run, x) for label, (run, _) in runners.items()}
        stats = measure_interleaved(calls, batch, budget)
        for label, (_, base) in runners.items():
            row = {**base, "batch": batch, **stats[label]}
            logger.info("%-36s b=%-3d %7.2f img/s  p50 %8.1f ms", label, batch, row["images_per_s"], row["p50_ms"])
            rows.append(row)
    return rows


def ceilings(config: ViTConfig, threads: int) -> dict[str, float]:
    """GEMM ceilings per dtype (GFLOP/s, GOP/s for int8) and the images/s each allows for ``config``.

    Each dtype's ceiling is the best of the GEMMs measured for it, so an engine's share of it is ≤ ~1.
    """
    gflop_per_image = 2 * vit_macs(config) / 1e9
    result: dict[str, float] = {"gflop_per_image": gflop_per_image}
    measured: dict[str, dict[str, float]] = {"fp32": dict(gemm_gflops(config, threads=threads)), "bf16": {}, "int8": {}}
    for dtype in ("fp32", "bf16", "int8"):
        try:
            measured[dtype]["openvino"] = openvino_gemm_gops(config, threads=threads, precision=dtype)
        except Exception as err:  # informative only; a CPU without bf16 lands here
            logger.info("%s OpenVINO GEMM ceiling not measured: %s", dtype, err)
    try:
        measured["int8"]["onnxruntime"] = int8_gemm_gops(config, threads=threads)
    except Exception as err:
        logger.warning("int8 ONNX Runtime GEMM ceiling not measured: %s", err)
    for dtype, unit in (("fp32", "gflops"), ("bf16", "gflops"), ("int8", "gops")):
        if measured[dtype]:
            result[f"gemm_{dtype}_{unit}"] = max(measured[dtype].values())
            result.update({f"gemm_{dtype}_{unit}_{k}": v for k, v in measured[dtype].items()})
            result[f"{dtype}_images_per_s"] = result[f"gemm_{dtype}_{unit}"] / gflop_per_image
    return result


def summarise(rows: list[dict[str, Any]], ceiling: dict[str, float]) -> dict[str, Any]:
    """Best images/s per runner, shares of the ceiling, and the target ratios.

    Ratios are given twice: on mean throughput (``ratios``) and on the median batch latency
    (``ratios_p50``: batch ÷ p50), which a shared machine's bursts of load disturb less.
    """
    for row in rows:
        limit = ceiling.get(f"{row.get('precision', row['dtype'])}_images_per_s")
        if "images_per_s" in row and limit:
            row["share_of_ceiling"] = row["images_per_s"] / limit
    summary: dict[str, Any] = {}
    for key, rate in (("", _mean_rate), ("_p50", _p50_rate)):
        best, ratios = _ratios([r for r in rows if "images_per_s" in r], ceiling, rate)
        summary["best" + key], summary["ratios" + key] = best, ratios
    return summary


def _mean_rate(row: dict[str, Any]) -> float:
    return float(row["images_per_s"])


def _p50_rate(row: dict[str, Any]) -> float:
    return float(row["batch"] * 1e3 / row["p50_ms"])


def _ratios(
    rows: list[dict[str, Any]], ceiling: dict[str, float], rate: Callable[[dict[str, Any]], float]
) -> tuple[dict[str, Any], dict[str, float]]:
    def top(role: str, dtypes: Sequence[str]) -> dict[str, Any] | None:
        found = [r for r in rows if r["role"] == role and r["dtype"] in dtypes]
        return max(found, key=rate) if found else None

    ours_fp32, ours_reduced = top("ours", ["fp32"]), top("ours", ["int8", "bf16"])
    peer_fp32, reference = top("peer", ["fp32"]), top("reference", ["fp32"])
    peer_reduced = top("peer", ["int8", "bf16"])
    ratios: dict[str, float] = {}
    if ours_fp32 and peer_fp32:
        ratios["ours_fp32_vs_best_fp32_peer"] = rate(ours_fp32) / rate(peer_fp32)
    if ours_fp32:
        ratios["ours_fp32_vs_fp32_gemm_ceiling"] = rate(ours_fp32) / ceiling["fp32_images_per_s"]
    if ours_reduced and peer_fp32:
        ratios["ours_reduced_vs_best_fp32_peer"] = rate(ours_reduced) / rate(peer_fp32)
    if ours_reduced and peer_reduced:
        ratios["ours_reduced_vs_best_reduced_peer"] = rate(ours_reduced) / rate(peer_reduced)
    if reference and peer_fp32:
        ratios["mindspore_vs_best_fp32_peer"] = rate(reference) / rate(peer_fp32)
    named = {
        "ours_fp32": ours_fp32,
        "ours_reduced": ours_reduced,
        "best_fp32_peer": peer_fp32,
        "best_reduced_peer": peer_reduced,
        "mindspore": reference,
    }
    best = {k: {"label": v["label"], "batch": v["batch"], "images_per_s": rate(v)} for k, v in named.items() if v}
    return best, ratios


def write_outputs(out: Path, payload: dict[str, Any]) -> None:
    rows = [r for r in payload["results"] if "images_per_s" in r]
    report.write_json(out / "engine.json", payload)
    table_rows = []
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = {r["batch"]: r for r in rows if r["label"] == label}
        first = next(iter(mine.values()))
        cells: list[object] = [label, first["role"]]
        for b in payload["batch_sizes"]:
            r = mine.get(b)
            cells += [r["images_per_s"], f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"] if r else [None, None]
        cells += [max(r.get("share_of_ceiling", 0) for r in mine.values()), first.get("max_abs_diff_vs_mindspore")]
        table_rows.append(cells)
    headers = ["engine[graph] dtype", "role"]
    for b in payload["batch_sizes"]:
        headers += [f"b{b} img/s", f"b{b} p50/p99 ms"]
    headers += ["best share of ceiling", "max |Δlogit| vs MindSpore"]
    skipped = [f"- {r['label']}: {r.get('skipped') or r.get('error')}" for r in payload["results"] if "batch" not in r]
    text = report.markdown_table(headers, table_rows)
    summary = payload["summary"]
    text += "\nRatios (mean images/s; in brackets: from the median batch latency)\n\n"
    text += "\n".join(
        f"- {k}: {v:.3f} ({summary['ratios_p50'].get(k, float('nan')):.3f})" for k, v in summary["ratios"].items()
    )
    text += "\n"
    text += ("\nNot measured:\n" + "\n".join(skipped) + "\n") if skipped else ""
    (out / "engine.md").write_text(text, encoding="utf-8")
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
        label: (
            [r["batch"] for r in rows if r["label"] == label],
            [r["images_per_s"] for r in rows if r["label"] == label],
        )
        for label in dict.fromkeys(r["label"] for r in rows)
    }
    ceiling = payload["ceiling"]
    hlines = {
        f"{d} GEMM ceiling": ceiling[f"{d}_images_per_s"]
        for d in ("fp32", "bf16", "int8")
        if f"{d}_images_per_s" in ceiling
    }
    report.line_plot(
        out / "engine.png",
        series,
        title=f"{payload['model']} ({payload['environment']['threads']} threads)",
        xlabel="batch size",
        ylabel="images/s",
        hlines=hlines,
    )


def run_engine_bench(
    out: Path,
    *,
    full: bool = False,
    threads: int | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    engines: Sequence[str] = (),
    budget: Budget | None = None,
    store_root: Path | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Run the engine benchmark and write engine.json/.md/.png into ``out``; returns the JSON payload.

    ``engines`` keeps only runners whose label contains one of the strings. ``model`` (with ``store_root``)
    benchmarks a store version instead of seeded random weights.
    """
    from vitserve.runtime.onnx_engine import default_threads

    threads = threads or default_threads()
    set_thread_limits(threads)
    with bench_workdir() as workdir:
        if model is not None:
            store = ModelStore(store_root) if store_root else ModelStore()
            card = store.resolve(model)
        else:
            variant = get_variant("vit_base_patch16_224")
            config, data = (variant.config, variant.data) if full else (QUICK_CONFIG, DataConfig(img_size=64))
            store, card = bench_store(config, data, workdir / "store")
        ctx = BenchContext(store=store, card=card, threads=threads, batch_sizes=tuple(batch_sizes), workdir=workdir)
        env = report.environment(threads)
        logger.info("engine benchmark: %s, %s, %d threads, versions %s", card.ref, env["cpu"], threads, env["versions"])
        ceiling = ceilings(card.config, threads)
        x_check = np.random.default_rng(0).standard_normal((1, *_input_shape(card.config))).astype(np.float32)
        results: list[dict[str, Any]] = []
        runners: dict[str, tuple[RunFn, dict[str, Any]]] = {}
        reference = None
        for spec in RUNNERS:
            if engines and not any(e in spec.label for e in engines):
                continue
            run, fields, logits = build_runner(spec, ctx, x_check, reference)
            if spec.role == "reference" and reference is None:
                reference = logits  # MindSpore's own numerics: what every later engine is compared with
            if run is None:
                results.append(fields)
            else:
                runners[spec.label] = (run, fields)
        chosen = budget or (FULL_BUDGET if full else QUICK_BUDGET)
        results = bench_all(runners, batch_sizes, x_check.shape[1:], chosen) + results
        payload = {
            "benchmark": "engine",
            "mode": "full" if full else "quick",
            "model": f"{card.ref} ({'ViT-B/16' if full and model is None else 'store version' if model else 'tiny'})",
            "config": card.config.to_dict(),
            "batch_sizes": list(batch_sizes),
            "environment": env,
            "ceiling": ceiling,
            "results": results,
        }
        payload["summary"] = summarise(results, ceiling)
        write_outputs(out, payload)
        return payload


def _input_shape(config: ViTConfig) -> tuple[int, int, int]:
    return (config.in_chans, config.img_size, config.img_size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny model, short runs (about a minute; the default)")
    size.add_argument("--full", action="store_true", help="ViT-B/16 at 224 (tens of minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON/MD/PNG")
    parser.add_argument("--threads", type=int, default=None, help="threads per engine (default: the CPUs available)")
    parser.add_argument("--engines", nargs="*", default=[], help="only runners whose label contains one of these")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--iters", type=int, default=None, help="exactly this many timed runs per batch size")
    parser.add_argument("--model", default=None, help="benchmark a store version (name, name:V, name@alias)")
    parser.add_argument(
        "--store-root", type=Path, default=None, help="store for --model (default: VITSERVE_STORE_ROOT)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.benchmarks.engine_bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    payload = run_engine_bench(
        args.out,
        full=args.full,
        threads=args.threads,
        batch_sizes=args.batch_sizes,
        engines=args.engines,
        budget=Budget(warmup=1, min_iters=args.iters, min_time_s=0.0, max_iters=args.iters) if args.iters else None,
        store_root=args.store_root,
        model=args.model,
    )
    print((args.out / "engine.md").read_text(encoding="utf-8"))
    print(f"environment: {payload['environment']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
