"""A tiny ViT config and seeded random weights for it (no model build needed), shared by the store tests
and the subprocess workers they start."""

from __future__ import annotations

import numpy as np

from vit.config import DataConfig, ViTConfig
from vit.convert_tables import expected_shapes

TINY_CONFIG = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
TINY_DATA = DataConfig(img_size=32, crop_pct=0.875)


def random_state(seed: int, config: ViTConfig = TINY_CONFIG) -> dict[str, np.ndarray]:
    """Every parameter of ``VisionTransformer(config)``, float32 N(0, 0.2²) (big enough that classes differ)."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) * 0.2).astype(np.float32)
        for name, shape in sorted(expected_shapes(config).items())
    }
