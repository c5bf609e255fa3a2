"""`vitserve predict IMAGE... --model REF`: top-k labels for local images, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from vitserve.admin.errors import EXIT_USAGE, CommandError
from vitserve.admin.remote_predict import predict_remote
from vitserve.admin.store_args import open_store, user_errors
from vitserve.runtime.engine import ENGINE_CHOICES

EPILOG = """examples:
  vitserve predict photo.jpg --model digits-vit
  vitserve predict a.jpg b.png --model vit-base:2 --top-k 5 --json
  vitserve predict photo.jpg --model ./converted      (a `vitserve convert --out` directory)
  vitserve predict photos/ --model vit-base --batch-size 32 --out preds.jsonl   (every image under photos/)
  vitserve predict photo.jpg --url http://127.0.0.1:8000   (on a running server; --model optional)
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[parent],
        help="classify local images with a stored (or converted) model",
        description=textwrap.fill(
            "Classify IMAGE files with MODEL: a store reference (name, name:V, name@alias), a "
            "`vitserve convert --out` directory, or a .ckpt with config.json beside it.",
            100,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--model", metavar="REF", help="store reference or checkpoint path (required without --url)")
    p.add_argument("--url", metavar="URL", help="classify on a running `vitserve serve` at URL instead of locally")
    p.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # A folder (IMAGE is one directory): batched on a CPU engine, unreadable files listed and skipped (exit 5).
    folder = p.add_argument_group("folder prediction (IMAGE is a directory)")
    folder.add_argument("--batch-size", type=int, default=32, help="images per engine call (default 32)")
    folder.add_argument("--out", type=Path, help="write predictions to FILE.jsonl or FILE.csv (default: stdout)")
    folder.add_argument("--engine", default="auto", choices=ENGINE_CHOICES)
    folder.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from vitserve.runtime.pipeline import pipeline
    from vitserve.vit.preprocess import ImageError

    if args.top_k < 1:
        raise CommandError(f"--top-k must be >= 1, got {args.top_k}")
    if args.url:
        return predict_remote(args)
    if args.model is None:
        raise CommandError("--model is required (or --url, to classify on a running server)", EXIT_USAGE)
    if any(image.is_dir() for image in args.images):
        from vitserve.admin.predict_folder import predict_folder

        if len(args.images) != 1:
            raise CommandError("give one folder, or image files only", EXIT_USAGE)
        return predict_folder(args, args.images[0])
    with user_errors():
        pipe = pipeline("image_classification", model=args.model, store=open_store(args))
    results: list[dict[str, Any]] = []
    for image in args.images:  # one at a time, so that an error names its file
        try:
            predictions = pipe(image, top_k=args.top_k)[0]
        except ImageError as err:
            raise CommandError(f"{image}: {err}") from err
        results.append({"image": str(image), "predictions": predictions})
    model = {"name": pipe.card.name, "version": pipe.card.version}
    if args.json:
        print(json.dumps({"model": model, "results": results}, indent=2))
        return 0
    print(f"model {pipe.card.ref}")
    for result in results:
        print(result["image"])
        for rank, p in enumerate(result["predictions"], 1):
            print(f"  {rank}. {p['score']:.4f}  {p['label']} ({p['index']})")
    return 0
