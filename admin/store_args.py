"""What the store commands share: the ``--store`` option, opening the store, and turning errors into one line."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_REFUSED, CommandError
from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.errors import AliasedVersion, ModelNotFound, PromotionRefused, VersionHeld
from vitserve.model_store.store import ROOT_ENV, default_root
from vitserve.vit.config import DataConfig, ViTConfig, get_variant, variant_names


def store_parent() -> argparse.ArgumentParser:
    """A parent parser adding ``--store DIR`` (default ``$VITSERVE_STORE_ROOT``, else ``./store``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--store",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"model store root (default: ${ROOT_ENV}, else ./store; now {default_root()})",
    )
    return parent


def open_store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(args.store)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report store errors, bad files and bad values as one-line ``CommandError``s: exit 3 for what does not
    exist (a model, version, alias or file), 4 for what the store refuses (a gated promotion, deleting an
    aliased version or one a running replica holds), else 1."""
    try:
        yield
    except (ModelNotFound, FileNotFoundError) as err:
        raise CommandError(str(err) or type(err).__name__, EXIT_NOT_FOUND) from err
    except (PromotionRefused, AliasedVersion, VersionHeld) as err:
        raise CommandError(str(err), EXIT_REFUSED) from err
    except StoreError as err:
        raise CommandError(str(err)) from err
    except (ValueError, OSError) as err:
        raise CommandError(f"{type(err).__name__}: {err}" if not str(err) else str(err)) from err


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{what} file not found: {path}") from None
    except ValueError as err:
        raise CommandError(f"{what} file {path} is not valid JSON: {err}") from err


def config_from_arg(value: str) -> tuple[ViTConfig, DataConfig | None]:
    """``--config``: a variant name (its config and preprocessing) or a ViTConfig JSON file."""
    if value in variant_names():
        variant = get_variant(value)
        return variant.config, variant.data
    path = Path(value)
    if not path.is_file():
        raise CommandError(
            f"--config {value!r} is neither a file nor a variant; variants: {', '.join(variant_names())}"
        )
    try:
        return ViTConfig.from_dict(read_json_file(path, "config")), None
    except (TypeError, ValueError) as err:
        raise CommandError(f"--config {path}: {err}") from err


def labels_from_file(path: Path | None, num_classes: int) -> list[str]:
    """``--labels``: a JSON list of class names (index order); default ImageNet names or "0".."C-1"."""
    from vitserve.model_store.pretrained import default_labels

    if path is None:
        return default_labels(num_classes)
    labels = read_json_file(path, "labels")
    if not isinstance(labels, list) or len(labels) != num_classes:
        got = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise CommandError(f"--labels {path}: need a JSON list of {num_classes} names, got {got}")
    return [str(label) for label in labels]
