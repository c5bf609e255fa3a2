"""scikit-learn's digits (1,797 labelled 8×8 greyscale images, 10 classes) exported as an ImageFolder.

The real data set that ships inside a package: the embedded default model is trained on it. Each image's
0–16 intensities are scaled to 0–255 and upscaled (nearest neighbour, so every original pixel stays a
crisp block) to ``size`` px RGB PNGs under ``<out>/{train,val}/<digit>/<index>.png``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsExport:
    train_dir: Path
    val_dir: Path
    train_count: int
    val_count: int


def validation_mask(labels: np.ndarray, *, seed: int, val_fraction: float = VAL_FRACTION) -> np.ndarray:
    """(N,) bool: which samples are validation; ``val_fraction`` of every class, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        is_val[members[: round(len(members) * val_fraction)]] = True
    return is_val


def export_digits(
    out: str | Path, *, size: int = 32, seed: int = 0, val_fraction: float = VAL_FRACTION
) -> DigitsExport:
    """Write the train/val ImageFolders (split stratified per class, fixed by ``seed``); idempotent."""
    from sklearn.datasets import load_digits  # scikit-learn is heavy to import; only this path needs it

    out = Path(out)
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # (1797, 8, 8), 0..16 → 0..255
    labels = digits.target.astype(int)
    is_val = validation_mask(labels, seed=seed, val_fraction=val_fraction)
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        split = "val" if is_val[index] else "train"
        path = out / split / str(label) / f"{index:04d}.png"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST).convert("RGB").save(path)
    log.info("digits: %d train / %d val images under %s", (~is_val).sum(), is_val.sum(), out)
    return DigitsExport(out / "train", out / "val", int((~is_val).sum()), int(is_val.sum()))
