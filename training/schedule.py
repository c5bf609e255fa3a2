"""The learning-rate schedule: linear warm-up, then a per-step cosine down to a floor (MAE's recipe)."""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    peak_lr: float, min_lr: float, *, epochs: int, warmup_epochs: float, steps_per_epoch: int
) -> np.ndarray:
    """The lr of every optimisation step, ``(epochs × steps_per_epoch,)`` float64.

    As MAE's ``adjust_learning_rate`` evaluated at each step's fractional epoch ``e = step / steps_per_epoch``:
    ``peak × e / warmup`` during warm-up (0 at the first step), then
    ``min + (peak − min) × ½ (1 + cos(π (e − warmup) / (epochs − warmup)))``.
    """
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and epochs ({epochs}) must be > 0")
    epoch = np.arange(epochs * steps_per_epoch, dtype=np.float64) / steps_per_epoch
    lrs = np.empty_like(epoch)
    warm = epoch < warmup_epochs
    lrs[warm] = peak_lr * epoch[warm] / warmup_epochs if warmup_epochs > 0 else peak_lr
    decay_span = max(epochs - warmup_epochs, 1e-12)
    progress = (epoch[~warm] - warmup_epochs) / decay_span
    lrs[~warm] = min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + np.cos(math.pi * progress))
    return lrs
