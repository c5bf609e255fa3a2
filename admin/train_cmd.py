"""`vitserve train`, `vitserve eval` and `vitserve bootstrap` (the embedded default model, digits-vit)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vitserve.admin.errors import CommandError
from vitserve.admin.progress import bar
from vitserve.admin.store_args import open_store, store_parent, user_errors
from vitserve.training.config import TrainConfig, load_config

DEFAULT_MODEL = "digits-vit"

TRAIN_EPILOG = """examples:
  vitserve train --config digits --data data/digits               DIR/train and DIR/val are used when present
  vitserve train --config vit_base_p16_224_100ep --data imageNet-1k --init-from vit-base-mae
  vitserve train --config my.yaml --resume runs/my-20250101-120000  continue a killed run exactly
shipped configs: training/configs/*.yaml (digits, vit_base_p16_224_100ep); data-parallel runs: msrun with
training/distributed.py (see its --help).
"""

EVAL_EPILOG = """examples:
  vitserve eval --model vit-base:2 --data imageNet-1k/val --dataset-name imagenet-1k-val
  vitserve eval --model digits-vit --data data/digits/val
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train`, `eval` and `bootstrap` to the CLI."""
    parent = store_parent()
    _add_train(sub, parent)
    _add_eval(sub, parent)
    _add_bootstrap(sub, parent)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[parent],
        help="train or fine-tune a ViT on an ImageFolder and publish the best checkpoint",
        description="Train from a YAML recipe; checkpoints and metrics.jsonl go to the run directory, the "
        "best validated weights are published to the store with their lineage and metrics.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file or shipped config name (required unless --resume)")
    p.add_argument("--data", type=Path, help="ImageFolder root (or a folder holding train/ and val/)")
    p.add_argument("--val-data", type=Path, help="validation ImageFolder (default: DATA/val when present)")
    p.add_argument("--init-from", metavar="REF", help="store version to fine-tune from (name, name:V, name@alias)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--name", help="model name to publish under")
    p.add_argument("--run-dir", type=Path, help="run directory (default: OUTPUT_DIR/NAME-TIMESTAMP)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--no-publish", action="store_true", help="do not publish to the store")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (listed) instead of failing")
    p.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval",
        parents=[parent],
        help="top-1/top-5 of a store version over every image of a folder; recorded in its card",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="REF")
    p.add_argument("--data", required=True, type=Path, help="ImageFolder: <class>/<image>")
    p.add_argument("--dataset-name", help="key of the metrics in the card (default: the folder's name)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="parallel decode workers")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (listed) instead of failing")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)


def _add_bootstrap(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bootstrap",
        parents=[parent],
        help=f"train the embedded default model ({DEFAULT_MODEL}) on scikit-learn's digits",
        description=f"Export scikit-learn's digits as an ImageFolder, train a small ViT from scratch on CPU "
        f"(about a minute on 2 cores), evaluate it and publish it as {DEFAULT_MODEL}@production. Does nothing when the "
        "store already has it, unless --force.",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/digits"), help="where the images are written")
    p.add_argument("--output-dir", type=Path, default=Path("runs"), help="where the run directory goes")
    p.add_argument(
        "--force", action="store_true", help=f"train and publish a new version even if {DEFAULT_MODEL} exists"
    )
    p.set_defaults(func=cmd_bootstrap)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.config is None:
        if args.resume is None:
            raise CommandError("--config is required (or --resume RUN_DIR)")
        return TrainConfig(max_steps=args.max_steps)
    config = load_config(args.config)
    changes: dict[str, object] = {}
    if args.data is not None:
        split = (args.data / "train").is_dir()
        changes["train_dir"] = str(args.data / "train" if split else args.data)
        if args.val_data is None and split and (args.data / "val").is_dir():
            changes["val_dir"] = str(args.data / "val")
    if args.val_data is not None:
        changes["val_dir"] = str(args.val_data)
    if args.skip_corrupt:
        changes["on_corrupt"] = "skip"
    for key in ("init_from", "name", "max_steps"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return config.replace(**changes)


def cmd_train(args: argparse.Namespace) -> int:
    from vitserve.training.trainer import result_summary, train

    with user_errors():
        config = _config_from_args(args)
        store = open_store(args)
        result = train(config, store=store, run_dir=args.run_dir, resume=args.resume, publish=not args.no_publish)
    print(json.dumps(result_summary(result), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vitserve.training.evaluate import evaluate_version

    with user_errors(), bar(None, f"eval {args.model}", unit="img", quiet=args.json) as progress:

        def advance(images: int, total: int) -> None:
            progress.total = total
            progress.update(images)

        card, result = evaluate_version(
            open_store(args),
            args.model,
            args.data,
            dataset_name=args.dataset_name,
            batch_size=args.batch_size,
            workers=args.workers,
            on_corrupt="skip" if args.skip_corrupt else "fail",
            on_progress=advance,
        )
    name = args.dataset_name or args.data.resolve().name
    if args.json:
        print(json.dumps({"ref": card.ref, "dataset": name, **card.metrics[name]}, indent=2))
        return 0
    print(f"{card.ref} on {name}: {result.num_images} images, top-1 {result.top1:.4f}, top-5 {result.top5:.4f}")
    worst = sorted(result.per_class.items(), key=lambda item: item[1])[:5]
    print("lowest per-class accuracy: " + ", ".join(f"{label} {acc:.3f}" for label, acc in worst))
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from vitserve.training.bootstrap import bootstrap_digits

    with user_errors():
        store = open_store(args)
        if DEFAULT_MODEL in store.list_models() and not args.force:
            versions = [card.version for card in store.versions(DEFAULT_MODEL)]
            print(f"{store.root} already has {DEFAULT_MODEL} (versions {versions}); nothing to do (--force retrains)")
            return 0
        start = time.perf_counter()
        card = bootstrap_digits(store, data_dir=args.data_dir, output_dir=args.output_dir, name=DEFAULT_MODEL)
    metrics = next(iter(card.metrics.values()), {})
    print(
        f"published {card.ref} (aliases: production) in {time.perf_counter() - start:.0f} s: "
        f"val top-1 {metrics.get('top1', float('nan')):.4f} on {int(metrics.get('num_images', 0))} images"
    )
    return 0
