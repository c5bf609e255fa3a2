"""ONNX exports of a store version, cached next to it so that a restart does not re-export.

Layout, inside the version's cache folder (``store.cache_dir(card)``)::

    cache/onnx-<sha256[:16]>-e<EXPORT_FORMAT>-<precision>-bdyn.onnx    the graph (symbolic batch)
    cache/onnx-<sha256[:16]>-e<EXPORT_FORMAT>-<precision>-bdyn.json    its manifest
    cache/openvino-<sha256[:16]>-e<EXPORT_FORMAT>-int8-static.xml      the NNCF-quantised OpenVINO IR (+ .bin,
                                                                      + .json manifest); made only on request,
                                                                      from calibration images
    cache/.export.lock                                                 serialises exports between processes

The manifest records what the file was made from (the weights' full sha256, the export format, the MindSpore
and onnx versions, the precision) and the file's own sha256. A file whose manifest is missing, disagrees with
the version's card or the running libraries, or whose bytes no longer hash to the manifest's value is stale:
it is exported again. Files are written to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vitserve.model_store.card import Card
from vitserve.model_store.locking import exclusive_lock
from vitserve.model_store.store import ModelStore
from vitserve.vit.files import sha256_file, write_text_atomic

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

# Bump when runtime/onnx_export.py's graph rewrites change: every cached export then becomes stale.
EXPORT_FORMAT = 2  # 2: LayerNorm variance and Dense rewritten (runtime/onnx_export.py)
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


@dataclass(frozen=True)
class Manifest:
    """What a cached export was made from; equality with the expected manifest means "fresh"."""

    weights_sha256: str
    export_format: int
    precision: str
    mindspore: str
    onnx: str
    batch: str = "dynamic"


def expected_manifest(card: Card, precision: str) -> Manifest:
    import mindspore
    import onnx

    return Manifest(
        weights_sha256=card.sha256,
        export_format=EXPORT_FORMAT,
        precision=precision,
        mindspore=mindspore.__version__,
        onnx=onnx.__version__,
    )


def cache_path(store: ModelStore, card: Card, precision: str) -> Path:
    """Where the ``precision`` export of ``card``'s version lives (it may not exist yet)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    stem = f"onnx-{card.sha256[:16]}-e{EXPORT_FORMAT}-{precision}-bdyn"
    return store.cache_dir(card) / f"{stem}.onnx"


def cached_onnx(store: ModelStore, card: Card, precision: str = "fp32") -> Path:
    """The path of a fresh ONNX export of ``card``'s version at ``precision``, exporting it if needed.

    ``fp32`` is exported from the store's weights (verified against the card); ``int8`` is the fp32 export
    with dynamic int8 quantisation of its matmul weights. Safe to call from several processes at once.
    """
    path = cache_path(store, card, precision)
    if is_fresh(path, expected_manifest(card, precision)):
        logger.info("reusing cached export %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / ".export.lock"):
        _ensure_locked(store, card, precision)  # re-checks: another process may have exported while we waited
        _remove_stale(path.parent, current_prefix=f"onnx-{card.sha256[:16]}-e{EXPORT_FORMAT}-")
    return path


class MissingArtefact(LookupError):
    """A cached artefact that cannot be made on demand (it needs calibration images) has not been made."""


def static_int8_path(store: ModelStore, card: Card) -> Path:
    """Where the statically quantised OpenVINO IR of ``card``'s version lives (it may not exist yet)."""
    return store.cache_dir(card) / f"openvino-{card.sha256[:16]}-e{EXPORT_FORMAT}-int8-static.xml"


def cached_static_int8(store: ModelStore, card: Card, calibration: np.ndarray | None = None) -> Path:
    """The path of ``card``'s statically quantised int8 IR.

    With ``calibration`` (``(N, C, H, W)`` float32, preprocessed as requests are), (re)builds it from the fp32
    export; without, returns the cached one or raises ``MissingArtefact`` saying how to make it.
    """
    path = static_int8_path(store, card)
    want = expected_manifest(card, "int8-static")
    if calibration is None:
        if is_fresh(path, want):
            return path
        raise MissingArtefact(
            f"{card.ref} has no statically quantised int8 model; make it with "
            f"`vitserve bench --only precision --model {card.ref} --precision int8-static`"
        )
    from vitserve.runtime.static_quantize import quantize_static_int8

    source = cached_onnx(store, card, "fp32")  # before the lock: cached_onnx takes it too
    with exclusive_lock(path.parent / ".export.lock"):
        started = time.monotonic()
        quantize_static_int8(source, path, calibration)
        write_manifest(path, want)
        logger.info("quantised %s (static int8) in %.1f s", path, time.monotonic() - started)
        _remove_stale(
            path.parent, current_prefix=f"openvino-{card.sha256[:16]}-e{EXPORT_FORMAT}-", pattern="openvino-*"
        )
    return path


def _ensure_locked(store: ModelStore, card: Card, precision: str) -> None:
    path = cache_path(store, card, precision)
    want = expected_manifest(card, precision)
    if is_fresh(path, want):
        return
    started = time.monotonic()
    if precision == "fp32":
        from vitserve.runtime.onnx_export import export_onnx

        state, card = store.load(card.ref)  # verifies the weights' sha256 against the card
        export_onnx(card.config, state, path)
    else:
        from vitserve.runtime.quantize import quantize_int8

        _ensure_locked(store, card, "fp32")
        quantize_int8(cache_path(store, card, "fp32"), path)
    write_manifest(path, want)
    logger.info("exported %s in %.1f s", path, time.monotonic() - started)


def write_manifest(path: Path, manifest: Manifest) -> None:
    record = {**asdict(manifest), "file_sha256": sha256_file(path), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if path.with_suffix(".bin").is_file():  # an OpenVINO IR: its weights live in the .bin
        record["bin_sha256"] = sha256_file(path.with_suffix(".bin"))
    write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True) + "\n")


def is_fresh(path: Path, want: Manifest) -> bool:
    """True when ``path`` exists, its manifest equals ``want`` and the file hashes to the recorded sha256."""
    manifest_path = path.with_suffix(".json")
    if not path.is_file() or not manifest_path.is_file():
        return False
    try:
        record = json.loads(manifest_path.read_text(encoding="utf-8"))
        have = Manifest(**{k: record[k] for k in asdict(want)})
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable export manifest %s: exporting again", manifest_path)
        return False
    if have != want:
        logger.info("stale export %s (made from %s, want %s): exporting again", path, have, want)
        return False
    if record.get("file_sha256") != sha256_file(path):
        logger.warning("cached export %s does not match its manifest's sha256: exporting again", path)
        return False
    weights = path.with_suffix(".bin")
    if "bin_sha256" in record and (not weights.is_file() or record["bin_sha256"] != sha256_file(weights)):
        logger.warning("cached IR weights %s do not match the manifest's sha256", weights)
        return False
    return True


def _remove_stale(cache_dir: Path, current_prefix: str, pattern: str = "onnx-*") -> None:
    """Drop exports of other weights or an older export format (their names no longer match)."""
    for path in cache_dir.glob(pattern):
        if not path.name.startswith(current_prefix):
            logger.info("removing stale export %s", path)
            path.unlink(missing_ok=True)
