"""``vitserve export REF --format onnx|openvino``: a store version as a Triton or OVMS model repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_REFUSED, CommandError
from vitserve.admin.progress import Steps
from vitserve.admin.store_args import open_store, store_parent
from vitserve.model_store.errors import ModelNotFound, StoreError

EPILOG = """examples:
  vitserve export digits-vit@production --format onnx --out triton-models      Triton model repository
  vitserve export vit-base:2 --format onnx --precision int8 --out triton-models
  vitserve export vit-base:2 --format openvino --out ovms-models   (OVMS: --config_path ovms-models/config.json)

Layout: OUT/<name>/config.pbtxt and labels.txt (Triton), OUT/<name>/<version>/model.onnx or model.xml + .bin,
with labels.json, preprocessing.json (the card's resize, crop, mean and std; input and output names) and card.json
beside the graph; OUT/config.json lists the models for OVMS. The graphs are the service's own (cached in the store).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export``."""
    p = sub.add_parser(
        "export",
        parents=[store_parent()],
        help="export a version as a Triton (ONNX) or OpenVINO Model Server repository",
        description="Write a store version's graph, labels and preprocessing as a model repository.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ref", metavar="REF", help="name, name:version or name@alias")
    p.add_argument("--format", dest="fmt", choices=["onnx", "openvino"], default="onnx", help="default: onnx")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="default: fp32 (int8: onnx only)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="model repository root (created)")
    p.add_argument("--name", help="model name in the repository (default: the store's name)")
    p.add_argument("--force", action="store_true", help="replace an existing export of this version")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vitserve.runtime.model_export import ExportRefused, export_version

    store = open_store(args)
    try:
        with Steps(2, "export", quiet=args.json) as steps:
            card = store.resolve(args.ref)
            steps.next(f"{card.ref}: {args.fmt} {args.precision} graph")
            result = export_version(
                store, card, args.out, fmt=args.fmt, precision=args.precision, name=args.name, overwrite=args.force
            )
            steps.next("written")
    except ModelNotFound as err:
        raise CommandError(str(err), EXIT_NOT_FOUND) from None
    except ExportRefused as err:
        raise CommandError(str(err), EXIT_REFUSED) from None
    except (StoreError, ValueError, OSError) as err:
        raise CommandError(f"export failed: {err}") from err
    if args.json:
        print(json.dumps({"ref": card.ref, **result.to_dict()}, indent=2))
    else:
        print(f"exported {card.ref} ({args.fmt}, {args.precision}) to {result.version_dir}")
        print(f"  input {result.input_name!r} (N, {card.config.in_chans}, {card.data.img_size}, {card.data.img_size})")
        print(f"  output {result.output_name!r} (N, {card.config.num_classes}) logits")
    return 0
