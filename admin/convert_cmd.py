"""`vitserve convert`: turn a MAE / timm / Hugging Face / MindFormers checkpoint into ours (or MindFormers')."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from vitserve.admin.errors import EXIT_NOT_FOUND, CommandError
from vitserve.vit.checkpoint import CheckpointMismatch, save_checkpoint
from vitserve.vit.config import ViTConfig, get_config, variant_names
from vitserve.vit.convert import FORMATS, ConvertedModel, convert_file, from_vitserve_to_mindformers

logger = logging.getLogger(__name__)

DESCRIPTION = """Convert a checkpoint into DIR: model.ckpt (MindSpore, our parameter names), config.json (ViTConfig),
data.json (preprocessing: input size, crop, mean/std), source.json (lineage: path, format, sha256), and
labels.json when the source names its classes (Hugging Face).

Sources: MAE {'model': state_dict} .pth; timm .pth/.safetensors; Hugging Face ViTForImageClassification
.safetensors (reads the config.json beside it); MindFormers vit_base_p16 .ckpt; our own .ckpt.
.pth files are read with torch.load(weights_only=True) only."""

EXAMPLES = """examples:
  vitserve convert mae_finetuned_vit_base.pth --out converted/vit-base
  vitserve convert model.safetensors --format hf --out converted/hf-vit
  vitserve convert vit_base_p16.ckpt --format mindformers --img-size 384 --out converted/vit-384
  vitserve convert tiny.pth --config '{"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
      "num_heads": 4, "num_classes": 10}' --out converted/tiny
  vitserve convert mae_finetuned_vit_base.pth --to mindformers --out converted/mf
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert`` to the CLI."""
    parser = sub.add_parser(
        "convert",
        help="convert MAE/timm/HF/MindFormers weights to a MindSpore checkpoint",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", type=Path, help="checkpoint file (.pth, .safetensors, .bin, .ckpt)")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="source layout (default: auto)")
    parser.add_argument(
        "--config",
        metavar="JSON_OR_VARIANT",
        help="architecture: a variant name, a JSON object or a JSON file (default: from the file's shapes and, "
        "for HF, its config.json)",
    )
    parser.add_argument("--img-size", type=int, help="target resolution; pos_embed is resampled bicubically")
    parser.add_argument(
        "--to",
        default="vitserve",
        choices=["vitserve", "mindformers"],
        help="also write DIR/mindformers.ckpt in MindFormers' vit_base_p16 layout (mean-pool models only)",
    )
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--json", action="store_true", help="print the result (config, source) as JSON")
    parser.set_defaults(func=run)


def parse_config(text: str) -> ViTConfig:
    """A variant name, an inline JSON object, or the path of a JSON file."""
    stripped = text.strip()
    try:
        if stripped.startswith("{"):
            return ViTConfig.from_json(stripped)
        path = Path(stripped)
        if path.suffix == ".json" or path.is_file():
            return ViTConfig.from_json(path.read_text())
        return get_config(stripped)
    except KeyError as err:  # unknown variant: its message lists the known ones
        raise CommandError(str(err.args[0])) from err
    except (OSError, ValueError, TypeError) as err:
        raise CommandError(f"bad --config {text!r}: {err} (variants: {', '.join(variant_names())})") from err


def run(args: argparse.Namespace) -> int:
    config = parse_config(args.config) if args.config else None
    if args.img_size is not None and args.img_size <= 0:
        raise CommandError(f"--img-size must be positive, got {args.img_size}")
    try:
        converted = convert_file(args.src, args.format, config, img_size=args.img_size)
    except FileNotFoundError as err:
        raise CommandError(str(err), EXIT_NOT_FOUND) from err
    except (CheckpointMismatch, ValueError, ImportError) as err:
        raise CommandError(str(err)) from err
    mindformers = None
    if args.to == "mindformers":
        try:
            mindformers = from_vitserve_to_mindformers(converted.state)
        except ValueError as err:
            raise CommandError(str(err)) from err
    write_output(converted, args.out, mindformers)
    cfg = converted.config
    if args.json:
        print(json.dumps({"out": str(args.out), "config": cfg.to_dict(), "source": converted.source}, indent=2))
        return 0
    print(
        f"converted {converted.source['format']} checkpoint {args.src} → {args.out}: "
        f"{cfg.embed_dim}×{cfg.depth} ViT, patch {cfg.patch_size}, {cfg.img_size}px, {cfg.global_pool} pool, "
        f"{cfg.num_classes} classes"
    )
    return 0


def write_output(converted: ConvertedModel, out: Path, mindformers: dict[str, np.ndarray] | None = None) -> None:
    """DIR/model.ckpt, config.json, data.json, source.json (+ labels.json, mindformers.ckpt)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(converted.state, out / "model.ckpt")
        (out / "config.json").write_text(converted.config.to_json() + "\n")
        (out / "data.json").write_text(json.dumps(converted.data.to_dict(), indent=2) + "\n")
        (out / "source.json").write_text(json.dumps(converted.source, indent=2) + "\n")
        if converted.labels is not None:
            (out / "labels.json").write_text(json.dumps(converted.labels, indent=2) + "\n")
        if mindformers is not None:
            save_checkpoint(mindformers, out / "mindformers.ckpt")
    except OSError as err:
        raise CommandError(f"cannot write {out}: {err}") from err
