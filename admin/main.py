"""``vitserve``: the admin CLI. Thin commands over the packages; global runtime state is set here only."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vitserve.admin import bench_cmd, convert_cmd, models_cmd, serve_cmd, train_cmd
from vitserve.admin.errors import EXIT_CODES_HELP, CommandError
from vitserve.admin.export_cmd import register as register_export
from vitserve.admin.version import version_string

EPILOG = """examples:
  vitserve bootstrap                          train the embedded default model (digits) into ./store
  vitserve serve --port 8000                  serve the store's models over HTTP
  vitserve predict photo.jpg --model digits-vit --top-k 3
  vitserve import mae_finetuned_vit_base.pth --name vit-base
  vitserve models list
  vitserve models promote vit-base 2 --alias production
  vitserve train --config configs/digits.yaml
  vitserve eval --model vit-base:2 --data imageNet-1k/val
  vitserve bench --quick
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitserve",
        description="Vision Transformer image classification: serve, predict, convert, train, evaluate, benchmark.",
        epilog=EPILOG + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=version_string())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve_cmd, models_cmd, convert_cmd, train_cmd, bench_cmd):
        module.register(sub)
    register_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except CommandError as err:
        print(f"vitserve {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
