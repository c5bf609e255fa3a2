"""ONNX exports of a store version, cached next to it so that a restart does not re-export.

Layout, inside the version's cache folder (``store.cache_dir(card)``)::

    cache/onnx-<sha256[:16]>-e<EXPORT_FORMAT>-<precision>-bdyn.onnx    the graph (symbolic batch)
    cache/onnx-<sha256[:16]>-e<EXPORT_FORMAT>-<precision>-bdyn.json    its manifest
    cache/openvino-<sha256[:16]>-e<EXPORT_FORMAT>-int8-static.xml      the NNCF-quantised OpenVINO IR (+ .bin,
                                                                      + .json manifest); made only on request,
                                                                      from calibration images
    cache/.export.lock                                                 serialises exports between processes

The file's name holds the card's weights digest (checked to be one: never a path), and its manifest records
what it was made from (the weights' full sha256, the export format, the MindSpore and onnx versions, the
precision) and the file's own sha256, plus the ``.bin``'s for an IR, always checked. A file whose manifest is
missing, disagrees with the version's card or the running libraries, whose bytes (or IR weights) no longer hash
to the manifest's values, or which is not a regular file (a symlink) is stale: it is exported again, or, for
the static int8 IR, refused. ``read_verified`` returns the bytes it checked (``CachedGraph``), and the engines
load those bytes, never the path again: a file swapped after the check is not what runs. Files are written to a
temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vitserve.model_store.card import Card, check_sha256
from vitserve.model_store.errors import IntegrityError
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


@dataclass(frozen=True)
class CachedGraph:
    """A cached artefact's bytes as read and checked against its manifest: load these, never ``path`` again."""

    path: Path
    model: bytes = field(repr=False)  # the .onnx file, or an IR's .xml
    weights: bytes | None = field(default=None, repr=False)  # an IR's .bin


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
    stem = f"onnx-{_key(card)}-e{EXPORT_FORMAT}-{precision}-bdyn"
    return store.cache_dir(card) / f"{stem}.onnx"


def cached_onnx(store: ModelStore, card: Card, precision: str = "fp32") -> Path:
    """The path of a fresh ONNX export of ``card``'s version at ``precision``, exporting it if needed
    (``cached_graph`` without the bytes: for callers that hand the path to a tool)."""
    return cached_graph(store, card, precision).path


def cached_graph(store: ModelStore, card: Card, precision: str = "fp32") -> CachedGraph:
    """A fresh ONNX export of ``card``'s version at ``precision``, as verified bytes, exporting it if needed.

    ``fp32`` is exported from the store's weights (verified against the card); ``int8`` is the fp32 export
    with dynamic int8 quantisation of its matmul weights. Safe to call from several processes at once.
    """
    path = cache_path(store, card, precision)
    want = expected_manifest(card, precision)
    graph = read_verified(path, want)
    if graph is not None:
        logger.info("reusing cached export %s", path)
        return graph
    with exclusive_lock(path.parent / ".export.lock"):
        _ensure_locked(store, card, precision)  # re-checks: another process may have exported while we waited
        _remove_stale(path.parent, current_prefix=f"onnx-{_key(card)}-e{EXPORT_FORMAT}-")
        graph = read_verified(path, want)  # under the lock: every writer of the cache takes it
    if graph is None:
        raise IntegrityError(f"{card.ref}: the {precision} export {path} does not verify right after it was made")
    return graph


class MissingArtefact(LookupError):
    """A cached artefact that cannot be made on demand (it needs calibration images) has not been made."""


def static_int8_path(store: ModelStore, card: Card) -> Path:
    """Where the statically quantised OpenVINO IR of ``card``'s version lives (it may not exist yet)."""
    return store.cache_dir(card) / f"openvino-{_key(card)}-e{EXPORT_FORMAT}-int8-static.xml"


def cached_static_int8(store: ModelStore, card: Card, calibration: np.ndarray | None = None) -> Path:
    """The path of ``card``'s statically quantised int8 IR.

    With ``calibration`` (``(N, C, H, W)`` float32, preprocessed as requests are), (re)builds it from the fp32
    export; without, returns the cached one or raises ``MissingArtefact`` saying how to make it.
    """
    if calibration is None:
        return static_int8_graph(store, card).path
    from vitserve.runtime.static_quantize import quantize_static_int8

    path = static_int8_path(store, card)
    want = expected_manifest(card, "int8-static")
    source = cached_onnx(store, card, "fp32")  # before the lock: cached_onnx takes it too
    with exclusive_lock(path.parent / ".export.lock"):
        started = time.monotonic()
        quantize_static_int8(source, path, calibration)
        write_manifest(path, want)
        logger.info("quantised %s (static int8) in %.1f s", path, time.monotonic() - started)
        _remove_stale(path.parent, current_prefix=f"openvino-{_key(card)}-e{EXPORT_FORMAT}-", pattern="openvino-*")
    return path


def static_int8_graph(store: ModelStore, card: Card) -> CachedGraph:
    """``card``'s statically quantised int8 IR as verified bytes, or ``MissingArtefact`` saying how to make it."""
    graph = read_verified(static_int8_path(store, card), expected_manifest(card, "int8-static"))
    if graph is None:
        raise MissingArtefact(
            f"{card.ref} has no statically quantised int8 model; make it with "
            f"`vitserve bench --only precision --model {card.ref} --precision int8-static`"
        )
    return graph


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
    """Record ``manifest`` and the digest of the file just written at ``path`` (and of an IR's ``.bin``)."""
    record = {**asdict(manifest), "file_sha256": sha256_file(path), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if path.suffix == ".xml":  # an OpenVINO IR: its weights live in the .bin
        record["bin_sha256"] = sha256_file(path.with_suffix(".bin"))
    write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True) + "\n")


def is_fresh(path: Path, want: Manifest) -> bool:
    """True when ``read_verified`` accepts ``path``."""
    return read_verified(path, want) is not None


def read_verified(path: Path, want: Manifest) -> CachedGraph | None:
    """``path``'s bytes (and an IR's ``.bin``) when its manifest equals ``want`` and they hash to the manifest's
    digests; None (logged) when anything is missing, different or not a regular file."""
    record = _read_manifest(path.with_suffix(".json"))
    try:
        have = Manifest(**{k: record[k] for k in asdict(want)}) if record is not None else None
    except (KeyError, TypeError):
        have = None
    if have != want:
        logger.info("stale or missing export %s (manifest %s, want %s): exporting again", path, have, want)
        return None
    model = _read_regular(path)
    if model is None or record is None or record.get("file_sha256") != hashlib.sha256(model).hexdigest():
        logger.warning("cached export %s is missing or does not match its manifest's sha256", path)
        return None
    if path.suffix != ".xml":
        return CachedGraph(path, model)
    weights = _read_regular(path.with_suffix(".bin"))  # always checked: a manifest cannot opt out
    if weights is None or record.get("bin_sha256") != hashlib.sha256(weights).hexdigest():
        logger.warning("cached IR weights %s are missing or do not match the manifest's sha256", path)
        return None
    return CachedGraph(path, model, weights)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    raw = _read_regular(path)
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        record = None
    return record if isinstance(record, dict) else None


def _read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file itself (not a symlink, device or FIFO), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block the reader
    except OSError:  # missing, or a symlink (ELOOP)
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read()


def _key(card: Card) -> str:
    """The digest part of a cached file's name: the card's weights digest, checked to hold no path."""
    try:
        return check_sha256(card.sha256)[:16]
    except ValueError as err:
        raise IntegrityError(f"{card.ref}: {err}") from err


def _remove_stale(cache_dir: Path, current_prefix: str, pattern: str = "onnx-*") -> None:
    """Drop exports of other weights or an older export format (their names no longer match)."""
    for path in cache_dir.glob(pattern):
        if not path.name.startswith(current_prefix):
            logger.info("removing stale export %s", path)
            path.unlink(missing_ok=True)
