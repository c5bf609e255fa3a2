"""``vitserve bench``: the engine benchmark (our engines beside the peers) and the end-to-end HTTP benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitserve.admin.errors import CommandError
from vitserve.admin.progress import Steps
from vitserve.model_store.serving import REDUCED_PRECISIONS
from vitserve.runtime.engine import ENGINE_CHOICES

EPILOG = """examples:
  vitserve bench --quick                      tiny model, engine + HTTP with the peer servers, a few minutes
  vitserve bench --full --out bench-results   ViT-B/16 (tens of minutes on 2 cores)
  vitserve bench --only engine --engines onnxruntime torch --threads 2
  vitserve bench --only engine --model digits-vit --store ./store     a store version's own weights
  vitserve bench --only precision --model digits-vit    int8 vs fp32 top-1 agreement, recorded in the card
  vitserve bench --only many-models           cold start by model size, Zipf traffic over many models under a
                                              memory budget, the duplicate-image cache (--full: ViT-S, ViT-B)
  vitserve bench --soak 10                    hostile and slow clients beside good ones for 10 minutes, at
                                              /classify, /v2 and gRPC
  vitserve bench --fairness 5                 the per-client limits: one client alone against all limits off,
                                              and two greedy clients' shares
  vitserve bench --chaos 10 --seed 7          3 replicas under load while the store and the fleet change at
                                              random; exits 1 on any violated invariant

Writes engine.json/.md/.png and http.json/.md/.png into --out and prints the tables, the device, the library
versions and the thread count. Benchmarks only talk to 127.0.0.1.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench``."""
    p = sub.add_parser(
        "bench",
        help="benchmark the engines and the HTTP service",
        description="Measure images/s and latency: engines side by side with PyTorch, ONNX Runtime and OpenVINO "
        "peers on the same weights, then a real `vitserve serve` over a concurrency sweep.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny model, short runs (the default)")
    size.add_argument("--full", action="store_true", help="ViT-B/16 at 224")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory (default bench-results)")
    p.add_argument(
        "--only",
        choices=["engine", "http", "precision", "many-models"],
        help="run one benchmark; 'precision' measures --precision against fp32 for --model and records it in its "
        "card; 'many-models': cold start by size, Zipf traffic under a memory budget, the duplicate-image cache",
    )
    p.add_argument(
        "--precision",
        default="int8",
        choices=REDUCED_PRECISIONS,
        help="precision benchmark: int8 (ONNX Runtime dynamic), int8-static (OpenVINO, NNCF-calibrated: quantises "
        "the version first) or bf16 (OpenVINO; only where the CPU has native bf16)",
    )
    p.add_argument("--calibration", type=Path, help="int8-static: a folder of calibration images")
    p.add_argument("--threads", type=int, help="threads per engine (default: the CPUs available)")
    p.add_argument("--engines", nargs="*", default=[], help="engine benchmark: only runners whose label has these")
    p.add_argument("--engine", default="auto", help="HTTP benchmark: the server's engine (default auto)")
    p.add_argument("--model", help="engine benchmark: a store version instead of random weights")
    p.add_argument("--store", type=Path, dest="store_root", help="store for --model (default VITSERVE_STORE_ROOT)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (instead of the tables)")
    p.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="instead: good clients beside hostile and slow ones for MINUTES over /classify, /v2 and gRPC (RSS, "
        "outcomes by door and kind, p50/p99 per door)",
    )
    p.add_argument(
        "--soak-without",
        nargs="+",
        default=[],
        metavar="GROUP",
        help="--soak: leave out these groups of clients (hostile, over_rate, spoofer, slow), to see what each costs",
    )
    p.add_argument(
        "--fairness",
        type=float,
        metavar="MINUTES",
        help="instead: for MINUTES, one client alone against a server with all per-client limits off (images/s "
        "ratio), then two greedy clients from two addresses (each one's share of the images served)",
    )
    p.add_argument(
        "--chaos",
        type=float,
        metavar="MINUTES",
        help="instead: 3 replicas on one store under load while promotions, canaries, loads, deletes, gc, uploads, "
        "killed writers and killed replicas happen at random for MINUTES; reports every violated invariant",
    )
    p.add_argument("--seed", type=int, help="--chaos: the driver's seed (default: a random one, printed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.chaos is not None:
        return _chaos(args)
    try:
        from vitserve.benchmarks.engine_bench import run_engine_bench
        from vitserve.benchmarks.http_bench import run_http_bench
    except ImportError as err:
        raise CommandError(f"the benchmarks need the optional engines and peers installed: {err}") from err
    if args.engine not in ENGINE_CHOICES:
        raise CommandError(f"unknown engine {args.engine!r}; known: auto, mindspore, onnxruntime, openvino")
    out: Path = args.out
    if args.soak is not None:
        return _soak(args)
    if args.fairness is not None:
        return _fairness(args)
    if args.only == "precision":
        return _precision(args)
    if args.only == "many-models":
        return _many_models(args)
    phases = ["engine", "http"] if args.only is None else [args.only]
    results: dict[str, Any] = {}
    with Steps(len(phases), "bench", quiet=args.json) as steps:
        if "engine" in phases:
            steps.next("engines")
            results["engine"] = run_engine_bench(
                out,
                full=args.full,
                threads=args.threads,
                engines=args.engines,
                store_root=args.store_root,
                model=args.model,
            )
            _show(args, out / "engine.md", results["engine"])
        if "http" in phases:
            steps.next("http sweep")
            results["http"] = run_http_bench(out, full=args.full, engine=args.engine, threads=args.threads)
            _show(args, out / "http.md", results["http"])
    if args.json:
        print(json.dumps({"out": str(out), **results}, indent=2, default=str))
    else:
        print(f"results in {out}/")
    return 0


def _show(args: argparse.Namespace, table: Path, payload: dict[str, Any]) -> None:
    if not args.json:
        print(table.read_text(encoding="utf-8"))
        _print_environment(payload)


def _precision(args: argparse.Namespace) -> int:
    import json

    from vitserve.benchmarks.precision_bench import run_precision_bench
    from vitserve.benchmarks.precision_check import PrecisionUnavailable
    from vitserve.model_store import ModelStore
    from vitserve.model_store.errors import StoreError

    if not args.model:
        raise CommandError("--only precision needs --model REF")
    try:
        results = run_precision_bench(
            ModelStore(args.store_root),
            args.model,
            precision=args.precision,
            threads=args.threads,
            calibration=args.calibration,
        )
    except (StoreError, PrecisionUnavailable, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    print(json.dumps(results, indent=2))
    return 0


def _many_models(args: argparse.Namespace) -> int:
    from vitserve.benchmarks.many_models import run_many_models_bench

    payload = run_many_models_bench(args.out, full=args.full, engine=args.engine)
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print((args.out / "many_models.md").read_text(encoding="utf-8"))
        print(f"results in {args.out}/")
    return 0


def _soak(args: argparse.Namespace) -> int:
    from vitserve.benchmarks.soak import CLIENT_GROUPS, run_soak

    if args.soak <= 0:
        raise CommandError(f"--soak takes a positive number of minutes, got {args.soak}")
    unknown = set(args.soak_without) - CLIENT_GROUPS
    if unknown:
        raise CommandError(f"--soak-without: unknown groups {sorted(unknown)}; known: {sorted(CLIENT_GROUPS)}")
    run_soak(args.out, minutes=args.soak, engine=args.engine, without=frozenset(args.soak_without))
    print((args.out / "soak.md").read_text(encoding="utf-8"))
    print(f"results in {args.out}/")
    return 0


def _fairness(args: argparse.Namespace) -> int:
    from vitserve.benchmarks.fairness import run_fairness

    if args.fairness <= 0:
        raise CommandError(f"--fairness takes a positive number of minutes, got {args.fairness}")
    run_fairness(args.out, minutes=args.fairness, engine=args.engine)
    print((args.out / "fairness.md").read_text(encoding="utf-8"))
    print(f"results in {args.out}/")
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from vitserve.benchmarks.chaos import new_seed, run_chaos

    if args.chaos <= 0:
        raise CommandError(f"--chaos takes a positive number of minutes, got {args.chaos}")
    seed = new_seed() if args.seed is None else args.seed
    print(f"chaos: seed {seed} (rerun with --seed {seed}), {args.chaos:g} minutes", flush=True)
    report = run_chaos(args.out, minutes=args.chaos, seed=seed)
    print((args.out / "chaos.md").read_text(encoding="utf-8"))
    print(f"results in {args.out}/")
    if report["violations"]:
        raise CommandError(f"{len(report['violations'])} invariant violations (seed {seed}); see above")
    return 0


def _print_environment(payload: dict[str, Any]) -> None:
    env = payload["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    cpu = f"{env['cpu']}, {env['cpus_available']} CPUs, {', '.join(env['cpu_flags'])}"
    print(f"device {env['device']} ({cpu}); threads {env['threads']}; {versions}\n")
