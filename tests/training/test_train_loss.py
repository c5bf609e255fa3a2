"""Soft-target cross-entropy against a numpy reference, and the targets mixup/cutmix produce."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor

from vitserve.training.augment import mix_batch, smooth_one_hot
from vitserve.training.config import AugmentConfig
from vitserve.training.loss import soft_target_cross_entropy


def _reference(logits: np.ndarray, target: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float((-(target * log_probs).sum(axis=1)).mean())


def test_soft_target_cross_entropy_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((6, 10)) * 5).astype(np.float32)
    target = rng.random((6, 10)).astype(np.float32)
    target /= target.sum(axis=1, keepdims=True)
    got = float(soft_target_cross_entropy(Tensor(logits), Tensor(target)).asnumpy())
    assert got == pytest.approx(_reference(logits.astype(np.float64), target), rel=1e-5)


def test_one_hot_target_is_plain_cross_entropy_and_stays_finite() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    got = float(soft_target_cross_entropy(Tensor(logits), Tensor(np.eye(3, dtype=np.float32)[[1]])).asnumpy())
    assert got == pytest.approx(1000.0)


def test_label_smoothing_values() -> None:
    target = smooth_one_hot(np.array([2, 0]), 4, 0.1)
    np.testing.assert_allclose(target[0], [0.025, 0.025, 0.925, 0.025])
    np.testing.assert_allclose(target.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "aug",
    [
        AugmentConfig(mixup=0.8, cutmix=0.0),
        AugmentConfig(mixup=0.0, cutmix=1.0),
        AugmentConfig(mixup=0.8, cutmix=1.0),
        AugmentConfig(mixup=0.0, cutmix=0.0, smoothing=0.0),
    ],
)
def test_mixed_targets_sum_to_one_and_match_the_mixed_pixels(aug: AugmentConfig) -> None:
    images = np.stack([np.full((3, 16, 16), float(i), np.float32) for i in range(4)])  # image i is all i
    labels = np.array([0, 1, 2, 3])
    for seed in range(5):
        mixed, target = mix_batch(images, labels, 4, aug, np.random.default_rng([seed, 7]))
        np.testing.assert_allclose(target.sum(axis=1), 1.0, rtol=1e-6)
        assert (target >= 0).all()
        # Image 0 is mixed with image 3 (the reversed batch): the share of 3's pixels is its target weight,
        # once the smoothing floor is removed.
        share = float((mixed[0].mean() - 0.0) / 3.0)
        off = aug.smoothing / 4
        weight_of_3 = (target[0, 3] - off) / (1 - aug.smoothing)
        assert share == pytest.approx(weight_of_3, abs=1e-5)
