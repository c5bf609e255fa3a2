"""The tiny ViT every test builds on, seeded random weights for it, and publishing it into a store.

Depth 2, width 32, 32 px, 8 px patches: a real ``VisionTransformer`` that compiles and runs in milliseconds.
Subprocess workers import this module too (``python -m tests...`` from the repository root).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from vitserve.model_store import Card, ModelStore
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.model import parameter_shapes

TINY = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
TINY_DATA = DataConfig(img_size=32, crop_pct=0.875)
LABELS = [f"class{i}" for i in range(TINY.num_classes)]


def random_state(seed: int = 0, config: ViTConfig = TINY, *, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Every parameter of ``VisionTransformer(config)``, float32 N(0, scale²), drawn in sorted name order.

    The default scale makes the classes of different images differ (a unit scale saturates the softmax).
    """
    rng = np.random.default_rng(seed)
    shapes = parameter_shapes(config)
    return {name: (rng.standard_normal(shapes[name]) * scale).astype(np.float32) for name in sorted(shapes)}


def publish_tiny(
    store: ModelStore,
    name: str = "tiny",
    seed: int = 0,
    *,
    labels: Iterable[str] = LABELS,
    data: DataConfig = TINY_DATA,
    **kwargs: object,
) -> Card:
    """Publish seeded random weights for ``TINY`` as the next version of ``name`` (lineage records the seed)."""
    kwargs.setdefault("lineage", {"seed": seed})
    return store.publish(name, random_state(seed), TINY, data, list(labels), **kwargs)  # type: ignore[arg-type]
