"""Top-k labels for every image under a folder, in batches on an ``Engine``; unreadable files are reported.

Decoding runs in a thread pool (Pillow releases the GIL) a few batches ahead of the engine, so the engine rarely
waits; results come back in the sorted path order of the scan. A file with an image extension that cannot be
decoded becomes a ``Skipped`` entry with its reason and never stops the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.model_store.card import Card
from vitserve.runtime.engine import Engine
from vitserve.runtime.postprocess import top_k as top_k_of
from vitserve.vit.decode import IMAGE_EXTENSIONS
from vitserve.vit.preprocess import load_image, transform


@dataclass(frozen=True)
class Predicted:
    path: Path
    predictions: list[dict[str, Any]]  # [{"label", "index", "score"}, ...], best first


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def find_images(root: Path) -> list[Path]:
    """Every file under ``root`` (recursive, hidden folders skipped) with an image extension, sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.parts[len(root.parts) :])
    )


def predict_files(
    engine: Engine,
    card: Card,
    paths: Sequence[Path],
    *,
    batch_size: int,
    top_k: int,
    workers: int = 2,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[Predicted | Skipped]:
    """``Predicted`` or ``Skipped`` per path, in order; ``on_done(n)`` after each batch of ``n`` files."""
    if batch_size < 1 or top_k < 1:
        raise ValueError(f"batch_size and top_k must be >= 1, got {batch_size} and {top_k}")
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        # Decode up to two batches ahead of the engine; each future is one file's (3, H, W) array or its error.
        pending = [[pool.submit(_prepare, p, card) for p in chunk] for chunk in chunks[:2]]
        for index, chunk in enumerate(chunks):
            if index + 2 < len(chunks):
                pending.append([pool.submit(_prepare, p, card) for p in chunks[index + 2]])
            decoded = [f.result() for f in pending[index]]
            pending[index] = []
            yield from _run_batch(engine, card, chunk, decoded, top_k)
            if on_done is not None:
                on_done(len(chunk))


def _prepare(path: Path, card: Card) -> np.ndarray | str:
    try:
        return transform(load_image(path), card.data)
    except Exception as err:  # the ImageError family, and whatever a broken file makes Pillow raise
        return f"{type(err).__name__}: {err}"


def _run_batch(
    engine: Engine, card: Card, chunk: Sequence[Path], decoded: list[np.ndarray | str], top_k: int
) -> Iterator[Predicted | Skipped]:
    good = [x for x in decoded if isinstance(x, np.ndarray)]
    logits = engine.run(np.stack(good)) if good else np.zeros((0, 0), np.float32)
    rows = iter(logits)
    for path, item in zip(chunk, decoded, strict=True):
        if isinstance(item, str):
            yield Skipped(path, item)
        else:
            yield Predicted(path, [asdict(p) for p in top_k_of(next(rows), top_k, card.labels)])
