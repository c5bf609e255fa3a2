"""A tiny checkpoint in MAE's fine-tuned layout (``{'model': timm state dict}``, saved by torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.tiny import random_state
from vitserve.vit.config import ViTConfig

# 192 wide: a standard width, so the head count is inferred and no --config is needed (as for real MAE files).
MAE_CONFIG = ViTConfig(img_size=32, patch_size=8, embed_dim=192, depth=1, num_heads=3, num_classes=1000)


def write_mae_checkpoint(path: Path, seed: int = 3) -> dict[str, np.ndarray]:
    """Write the file; return the same weights in our names (LayerNorm gamma/beta)."""
    ours = random_state(seed, MAE_CONFIG)
    timm = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): torch.from_numpy(v) for k, v in ours.items()}
    torch.save({"model": timm}, path)
    return ours
