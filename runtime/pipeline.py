"""The seed's ``pipeline("image_classification", model=...)``: images in, top-k labels out.

It predicts the way the service does: the card's preprocessing, an ``Engine`` (by default the MindSpore model
itself), and ``postprocess.top_k``. ``vitserve predict`` is this pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.pretrained import Pretrained, from_pretrained
from vitserve.model_store.store import ModelStore
from vitserve.runtime.engine import Engine, MindSporeEngine
from vitserve.runtime.postprocess import top_k as top_k_of
from vitserve.vit.preprocess import ImageSource, preprocess

TASK = "image_classification"
DEFAULT_TOP_K = 3  # the seed's pipeline default
BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # a call's images go through the engine in chunks of at most 32


class ImageClassificationPipeline:
    """``pipe(images, top_k=3)`` → per image, ``[{"label", "index", "score"}, ...]`` sorted by score.

    ``images``: one image or a list of them; each a path, encoded bytes, a PIL image or an ``(H, W[, C])``
    uint8 array (a 4-D ``(B, H, W, C)`` array is a batch). Preprocessing is the card's ``DataConfig``.
    """

    def __init__(self, engine: Engine, card: Card) -> None:
        self.engine = engine
        self.card = card

    def __call__(
        self, images: ImageSource | Sequence[ImageSource], top_k: int = DEFAULT_TOP_K
    ) -> list[list[dict[str, Any]]]:
        sources = _as_list(images)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        chunk = max(self.engine.batch_sizes)
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(sources), chunk):
            batch = preprocess(sources[start : start + chunk], self.card.data)
            results += [[asdict(p) for p in top_k_of(row, top_k, self.card.labels)] for row in self.logits(batch)]
        return results

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 → ``(B, num_classes)`` float32 logits."""
        return self.engine.run(batch)


def pipeline(
    task: str = TASK,
    model: str | Path | Pretrained = "",
    *,
    store: ModelStore | None = None,
    engine: Engine | None = None,
) -> ImageClassificationPipeline:
    """A callable from images to top-k labels for ``model`` (a store reference, a checkpoint directory or a
    ``Pretrained``). ``engine`` replaces the default, the MindSpore model run as it is loaded."""
    if task.replace("-", "_") != TASK:
        raise ValueError(f"unsupported task {task!r}; supported: {TASK!r}")
    if not model:
        raise ValueError("pipeline needs model= (a store reference, a checkpoint directory or a Pretrained)")
    pretrained = model if isinstance(model, Pretrained) else from_pretrained(model, store=store)
    config = pretrained.card.config
    if not config.num_classes:
        raise ValueError(f"{pretrained.card.ref}: the model has no classifier head (num_classes 0)")
    if engine is None:
        engine = MindSporeEngine(pretrained.model, BATCH_SIZES, image_shape=pretrained.card.input_shape)
    return ImageClassificationPipeline(engine, pretrained.card)


def _as_list(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, list | tuple):
        return list(images)
    return [images]  # type: ignore[list-item]  # one path, bytes object or PIL image
