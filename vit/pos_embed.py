"""Resampling a learned position embedding to another patch grid (e.g. 224 px → 384 px)."""

from __future__ import annotations

import math

import numpy as np

# Keys' cubic convolution coefficient; torch's bicubic (and so timm's resampling) uses -0.75.
_CUBIC_A = -0.75


def _cubic(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    a = _CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) interpolation weights, half-pixel centres (align_corners=False), edges clamped."""
    scale = in_size / out_size
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    base = np.floor(centres).astype(np.int64)
    frac = centres - base
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for offset in range(-1, 3):
        idx = np.clip(base + offset, 0, in_size - 1)
        np.add.at(weights, (np.arange(out_size), idx), _cubic(frac - offset))
    return weights


def resample_pos_embed(pos_embed: np.ndarray, new_grid: int, *, num_prefix_tokens: int = 1) -> np.ndarray:
    """(1, prefix + g*g, D) → (1, prefix + new_grid**2, D): the grid part bicubically resized, the
    prefix (cls) token kept as is. Matches ``torch.nn.functional.interpolate(mode="bicubic")``."""
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be (1, tokens, dim), got {pos_embed.shape}")
    prefix, grid_tokens = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    old_grid = math.isqrt(grid_tokens.shape[0])
    if old_grid * old_grid != grid_tokens.shape[0]:
        raise ValueError(f"pos_embed has {grid_tokens.shape[0]} grid tokens, not a square grid")
    if old_grid == new_grid:
        return pos_embed
    dim = grid_tokens.shape[1]
    grid = grid_tokens.reshape(old_grid, old_grid, dim).astype(np.float64)
    m = _bicubic_matrix(old_grid, new_grid)
    resized = np.einsum("ih,hwd,jw->ijd", m, grid, m).reshape(1, new_grid * new_grid, dim)
    return np.concatenate([prefix, resized.astype(pos_embed.dtype)], axis=1)
