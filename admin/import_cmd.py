"""`vitserve import` (convert a foreign checkpoint and publish it) and `vitserve ckpt upload` (publish one of
ours, to the local store or to a running service's admin API)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_USAGE, CommandError
from vitserve.admin.store_args import config_from_arg, labels_from_file, open_store, read_json_file, user_errors
from vitserve.vit.checkpoint import StateDict
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.files import sha256_file

IMPORT_EPILOG = """examples:
  vitserve import mae_finetuned_vit_base.pth --name vit-base --alias production
  vitserve import hf:google/vit-base-patch16-224                  by Hub id (cache, HF_HUB_OFFLINE honoured)
  vitserve import timm/vit_base_patch16_224.augreg_in21k_ft_in1k --name vit-augreg
  vitserve import vit_base_patch16_224.augreg_in21k_ft_in1k.safetensors --name vit-augreg
  vitserve import hf-vit/model.safetensors --format hf --name hf-vit   (reads hf-vit/config.json too)
  vitserve import vit_base_p16.ckpt --format mindformers --name seed-vit
"""

UPLOAD_EPILOG = """examples:
  vitserve ckpt upload out/model.ckpt --config out/config.json --data out/data.json --name my-vit
  vitserve ckpt upload model.ckpt --config vit_base_p16 --labels labels.json --name my-vit
  vitserve ckpt upload model.ckpt --config config.json --name my-vit --url http://127.0.0.1:8000 --token $TOKEN
"""

TOKEN_ENV = "VITSERVE_ADMIN_TOKEN"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import",
        parents=[parent],
        help="convert an MAE/timm/Hugging Face/MindFormers checkpoint and publish it to the store",
        description=textwrap.fill(
            "Convert SRC (.pth, .safetensors or .ckpt) to our layout, verify it and publish it as the next "
            "version of --name, with the source file's path, format and sha256 as lineage.",
            100,
        ),
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, metavar="SRC", help="a checkpoint file, or a Hub id: hf:ORG/NAME[@REV], timm/NAME")
    p.add_argument("--name", help="model name in the store (a-z 0-9 . _ -); a Hub id defaults to its repo name")
    p.add_argument("--json", action="store_true", help="print the published reference as JSON")
    p.add_argument("--format", default="auto", help="auto (default), timm, mae, hf, mindformers or vitserve")
    p.add_argument("--config", help="override the architecture: a variant name or a ViTConfig JSON file")
    p.add_argument("--labels", type=Path, help="JSON list of class names (default: ImageNet-1k for 1000 classes)")
    p.add_argument("--alias", action="append", default=[], help="point this alias at the new version (repeatable)")
    p.add_argument("--description", default="", help="free text stored in the card")
    p.set_defaults(func=cmd_import)
    _register_upload(sub, parent)


def _register_upload(sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    ckpt = sub.add_parser("ckpt", help="checkpoint upload", epilog=UPLOAD_EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    actions = ckpt.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "upload",
        parents=[parent],
        help="publish a MindSpore .ckpt (our parameter names) to the local store or a running service",
        description=textwrap.fill(
            "Load CKPT into the model built from --config (strict: every key and shape), then publish it to "
            "the local store (default) or POST it to a running service's admin API (--url, --token).",
            100,
        ),
        epilog=UPLOAD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ckpt", type=Path, metavar="CKPT")
    p.add_argument("--config", required=True, help="ViTConfig JSON file, or a variant name (e.g. vit_base_p16)")
    p.add_argument("--data", type=Path, help="DataConfig JSON (preprocessing; default from the variant/img_size)")
    p.add_argument("--labels", type=Path, help="JSON list of class names")
    p.add_argument("--name", required=True, help="model name in the store")
    p.add_argument("--alias", action="append", default=[], help="point this alias at the new version (repeatable)")
    p.add_argument("--description", default="")
    p.add_argument("--url", help="base URL of a running vitserve service, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", help=f"admin bearer token for --url (default: ${TOKEN_ENV})")
    p.add_argument("--json", action="store_true", help="print the published reference as JSON")
    p.set_defaults(func=cmd_upload)


def cmd_import(args: argparse.Namespace) -> int:
    from vitserve.model_store.hub import parse_hub_id
    from vitserve.vit.convert import convert_file

    with user_errors():
        hub_id = parse_hub_id(str(args.src))
    if hub_id is not None:
        from vitserve.admin.hub_import import import_from_hub

        return import_from_hub(args, hub_id)
    if not args.name:
        raise CommandError("--name is required when importing a file", EXIT_USAGE)
    if args.src.suffix in (".pth", ".pt") and importlib.util.find_spec("torch") is None:
        raise CommandError(f"reading {args.src.name} needs PyTorch: pip install torch==2.13.0 (CPU), then retry")
    if not args.src.is_file():
        raise CommandError(f"no such checkpoint file: {args.src}", EXIT_NOT_FOUND)
    override = config_from_arg(args.config)[0] if args.config else None
    with tqdm(total=2, desc=f"import {args.src.name}", unit="step", file=sys.stderr) as bar, user_errors():
        bar.set_postfix_str("converting")
        converted = convert_file(args.src, args.format, override)
        bar.update()
        # --labels wins; then names the source carries (HF); then ImageNet-1k names or the indices.
        labels = (
            converted.labels
            if converted.labels and not args.labels
            else labels_from_file(args.labels, converted.config.num_classes)
        )
        bar.set_postfix_str("verifying and publishing")
        card = open_store(args).publish(
            args.name,
            converted.state,
            converted.config,
            converted.data,
            labels,
            lineage={"converted_from": converted.source},
            description=args.description,
            aliases=args.alias,
        )
        bar.update()
    aliases = f" (aliases: {', '.join(args.alias)})" if args.alias else ""
    if args.json:
        print(json.dumps({"ref": card.ref, "format": converted.source.get("format"), "aliases": args.alias}))
        return 0
    print(f"published {card.ref}{aliases} from {converted.source.get('format')} checkpoint {args.src}")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    with user_errors():
        config, variant_data = config_from_arg(args.config)
        data = (
            DataConfig.from_dict(read_json_file(args.data, "data"))
            if args.data
            else variant_data or DataConfig(img_size=config.img_size)
        )
        labels = labels_from_file(args.labels, config.num_classes)
        state = _load_into_model(args.ckpt, config)
        if args.url:
            reply = _upload_remote(args, config, data, labels)
            ref = f"{args.name}:{reply.get('version')}"
            print(json.dumps({"ref": ref, "url": args.url}) if args.json else f"uploaded {ref} to {args.url}")
            return 0
        card = open_store(args).publish(
            args.name, state, config, data, labels, lineage=_upload_lineage(args.ckpt),
            description=args.description, aliases=args.alias,
        )  # fmt: skip
    print(
        json.dumps({"ref": card.ref, "aliases": args.alias}) if args.json else f"published {card.ref} from {args.ckpt}"
    )
    return 0


def _upload_remote(args: argparse.Namespace, config: ViTConfig, data: DataConfig, labels: list[str]) -> dict[str, Any]:
    from vitserve.admin.upload_client import upload

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise CommandError(f"--url needs an admin token: --token or ${TOKEN_ENV}")
    return upload(
        args.url, token, args.name, args.ckpt, config, data, labels, description=args.description, aliases=args.alias
    )


def _load_into_model(path: Path, config: ViTConfig) -> StateDict:
    """Read ``path`` and load it into ``VisionTransformer(config)`` (strict), as the service will."""
    from vitserve.vit.checkpoint import load_checkpoint_file, load_state_dict
    from vitserve.vit.model import create_model

    with tqdm(total=2, desc=f"verify {path.name}", unit="step", file=sys.stderr) as bar:
        state = load_checkpoint_file(path)
        bar.update()
        load_state_dict(create_model(config), state)
        bar.update()
    return state


def _upload_lineage(path: Path) -> dict[str, Any]:
    return {"uploaded": path.name, "path": str(path.resolve()), "sha256": sha256_file(path)}
