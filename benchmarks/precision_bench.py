"""Accuracy of the reduced-precision engine for one store version, on real images, recorded in its card.

    python -m vitserve.benchmarks.precision_bench --model digits-vit --store ./store [--precision int8-static]

Always: top-1 agreement with fp32 on scikit-image's photographs (no labels needed). When the version
classifies the ten digits (labels "0".."9", the embedded default model): also scikit-learn's digits, the
validation split its trainer held out (``training.digits``), with the change in top-1 accuracy. Each goes
into the card's metrics as ``"<dataset>@<precision>"``.

``int8-static`` first quantises the version with NNCF (cached in the version), calibrated on real images
never used for the measurement: ``--calibration DIR`` (image files), else, for a digits model, its training
split. ``bf16`` is measured only where the CPU runs it natively.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.serving import REDUCED_PRECISIONS
from vitserve.model_store.store import ModelStore

logger = logging.getLogger(__name__)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field")


def photos() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in PHOTOS]


def digits_validation(size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The digits model's own validation split (``training.digits``: stratified, seed 0), prepared as its
    trainer prepared them: 0–16 → 0–255, nearest-neighbour upscaled to ``size`` px, RGB."""
    return digits_images(size, validation=True)


def digits_images(size: int, *, validation: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """The digits model's validation (or training) split, prepared as ``digits_validation`` says."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from vitserve.training.digits import validation_mask

    bunch = load_digits()
    keep = validation_mask(bunch.target, seed=0)
    keep = keep if validation else ~keep
    images = [
        np.asarray(
            Image.fromarray((image * 255 / 16).astype(np.uint8), "L")
            .resize((size, size), Image.Resampling.NEAREST)
            .convert("RGB")
        )
        for image in bunch.images[keep]
    ]
    return images, bunch.target[keep].astype(np.int64)


def is_digits_model(card: Card) -> bool:
    return [str(label) for label in card.labels] == [str(i) for i in range(10)]


CALIBRATION_LIMIT = 128  # images; NNCF's ranges settle well before this on ViT (its default is 300)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def calibration_images(card: Card, folder: Path | None) -> list[Any]:
    """Calibration images for static int8: ``folder``'s image files, else a digits model's training split."""
    if folder is not None:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {folder}")
        return list(files[:CALIBRATION_LIMIT])
    if is_digits_model(card):
        return digits_images(card.data.img_size, validation=False)[0][:CALIBRATION_LIMIT]
    raise ValueError(f"{card.ref}: int8-static needs calibration images; name a folder of them with --calibration")


def run_precision_bench(
    store: ModelStore,
    ref: str,
    *,
    precision: str = "int8",
    threads: int | None = None,
    record: bool = True,
    calibration: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Measure (and record in the card) ``precision`` against fp32 on the photos and, for a digits model, digits."""
    from vitserve.benchmarks.precision_check import measure_precision

    card = store.resolve(ref)
    if precision == "int8-static":
        from vitserve.runtime.export_cache import cached_static_int8
        from vitserve.vit.preprocess import preprocess

        cached_static_int8(store, card, preprocess(calibration_images(card, calibration), card.data))
    results = {
        "skimage-photos": measure_precision(
            store, card, photos(), dataset="skimage-photos", precision=precision, threads=threads, record=record
        )
    }
    if is_digits_model(card):
        images, labels = digits_validation(card.data.img_size)
        results["digits-val"] = measure_precision(
            store,
            card,
            images,
            labels=labels,
            dataset="digits-val",
            precision=precision,
            threads=threads,
            record=record,
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitserve.benchmarks.precision_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="store reference (name, name:V, name@alias)")
    parser.add_argument("--store", type=Path, default=None, help="store root (default VITSERVE_STORE_ROOT or ./store)")
    parser.add_argument("--precision", default="int8", choices=REDUCED_PRECISIONS)
    parser.add_argument("--calibration", type=Path, default=None, help="int8-static: a folder of calibration images")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-record", action="store_true", help="measure only; leave the card as it is")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results: dict[str, Any] = run_precision_bench(
        ModelStore(args.store),
        args.model,
        precision=args.precision,
        threads=args.threads,
        record=not args.no_record,
        calibration=args.calibration,
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
