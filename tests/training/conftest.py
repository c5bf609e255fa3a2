"""Fixtures of the training tests: small real ImageFolders written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_folder(root: Path, counts: dict[str, int], *, size: int = 40, seed: int = 0) -> Path:
    """root/<class>/<i>.png with class-dependent colours (so a model can learn them) plus noise."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = np.zeros((size, size, 3), np.float32)
            base[..., index % 3] = 200.0
            pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def color_folder(tmp_path: Path) -> Path:
    """Three classes ("blue", "green", "red") of 40×40 PNGs: 7, 6, 5 images."""
    return write_folder(tmp_path / "colors", {"red": 5, "green": 6, "blue": 7})
