"""The embedded default model: scikit-learn's digits → ImageFolder → a small ViT from scratch → the store.

Nothing can be downloaded where vitserve first runs, so its default model is trained from data that ships
inside a package. Its card says exactly what it is and how accurate it measured.
"""

from __future__ import annotations

from pathlib import Path

from vitserve.model_store import Card, ModelStore
from vitserve.training.config import load_config
from vitserve.training.digits import export_digits
from vitserve.training.trainer import train

DESCRIPTION = (
    "A small ViT ({depth} blocks, width {embed_dim}, patch {patch_size}, {img_size} px input) trained from "
    "scratch on scikit-learn's digits data set (8x8 greyscale handwritten digits upscaled to {img_size} px RGB; "
    "{train_images} training / {val_images} validation images, split fixed by seed) for {epochs} epochs on CPU "
    "by `vitserve bootstrap`. Measured validation top-1 {top1:.4f}, top-5 {top5:.4f}. A demonstration model "
    "for the embedded store: it only knows the digits 0-9."
)


def bootstrap_digits(store: ModelStore, *, data_dir: str | Path, output_dir: str | Path, name: str) -> Card:
    """Export digits, train ``configs/digits.yaml`` on them, publish as ``name`` with alias production."""
    export = export_digits(data_dir)
    config = load_config("digits").replace(
        train_dir=str(export.train_dir),
        val_dir=str(export.val_dir),
        output_dir=str(output_dir),
        name=name,
        aliases=("production",),
        description=DESCRIPTION,
    )
    result = train(config, store=store)
    if result.card is None:
        raise RuntimeError("training finished without publishing a version")
    return result.card
