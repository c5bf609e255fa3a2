"""The lr schedule: MAE's warm-up + per-step cosine, and the batch-size scaling rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitserve.training.config import TrainConfig
from vitserve.training.schedule import cosine_schedule


def test_warmup_is_linear_from_zero_and_cosine_ends_at_min_lr() -> None:
    lrs = cosine_schedule(1e-3, 1e-6, epochs=10, warmup_epochs=2, steps_per_epoch=5)
    assert lrs.shape == (50,)
    assert lrs[0] == 0.0
    np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(10) / 10)  # epoch e = step / 5; lr = peak·e/2
    assert lrs[10] == pytest.approx(1e-3)  # warm-up ends at the peak
    # MAE's formula at step 30 (epoch 6): min + (peak − min)·½(1 + cos(π·(6 − 2)/(10 − 2)))
    assert lrs[30] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert np.all(np.diff(lrs[10:]) < 0)
    assert lrs[-1] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 7.8 / 8)))
    assert lrs.min() >= 0.0


def test_no_warmup_starts_at_peak() -> None:
    lrs = cosine_schedule(0.5, 0.0, epochs=2, warmup_epochs=0, steps_per_epoch=2)
    np.testing.assert_allclose(lrs, [0.5 * 0.5 * (1 + math.cos(math.pi * e / 2)) for e in (0, 0.5, 1, 1.5)])


def test_peak_lr_scales_with_global_batch() -> None:
    assert TrainConfig().peak_lr(256) == pytest.approx(5e-4)
    assert TrainConfig().peak_lr(1024) == pytest.approx(2e-3)  # 32 per device × 32 devices
    assert TrainConfig(lr=0.1).peak_lr(1024) == 0.1


def test_bad_schedule_inputs_fail() -> None:
    with pytest.raises(ValueError, match="steps_per_epoch"):
        cosine_schedule(1e-3, 0, epochs=1, warmup_epochs=0, steps_per_epoch=0)
