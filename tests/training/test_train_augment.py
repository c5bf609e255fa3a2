"""The per-image training augmentations: shapes, the RandAugment policy, erasing, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitserve.training.augment import (
    RAND_OPS,
    RandAugmentPolicy,
    normalize,
    random_erasing,
    random_resized_crop,
    train_transform,
)
from vitserve.training.config import AugmentConfig
from vitserve.vit.config import DataConfig


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def test_policy_string_parses_like_timm() -> None:
    assert RandAugmentPolicy.parse("rand-m9-mstd0.5-inc1") == RandAugmentPolicy(9.0, 2, 0.5, 0.5)
    assert RandAugmentPolicy.parse("rand-m7-n3") == RandAugmentPolicy(7.0, 3, 0.0, 0.5)
    with pytest.raises(ValueError, match="unknown RandAugment option"):
        RandAugmentPolicy.parse("rand-m9-x4")
    with pytest.raises(ValueError, match="inc1"):
        RandAugmentPolicy.parse("rand-m9-inc0")


@pytest.mark.parametrize("name", sorted(RAND_OPS))
def test_every_randaugment_op_keeps_size_and_mode(name: str, photo: Image.Image) -> None:
    for magnitude in (0.0, 9.0, 10.0):  # mstd noise reaches both ends of the range
        out = RAND_OPS[name](photo, magnitude, np.random.default_rng(0))
        assert out.size == photo.size and out.mode == "RGB", (name, magnitude)
    if name not in ("Equalize", "AutoContrast"):  # a noise image is already equalised/full-range
        assert not np.array_equal(np.asarray(out), np.asarray(photo)), name


def test_random_resized_crop_size_and_determinism(photo: Image.Image) -> None:
    a = random_resized_crop(photo, 32, np.random.default_rng(5), scale=(0.08, 1.0), ratio=(0.75, 4 / 3))
    b = random_resized_crop(photo, 32, np.random.default_rng(5), scale=(0.08, 1.0), ratio=(0.75, 4 / 3))
    assert a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_random_erasing_fills_one_box_with_noise() -> None:
    x = np.zeros((3, 32, 32), np.float32)
    random_erasing(x, np.random.default_rng(0), prob=1.0)
    changed = (x != 0).any(axis=0)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert changed.sum() == len(rows) * len(cols)  # one rectangle
    assert 0.02 * 1024 * 0.8 <= changed.sum() <= 1024 / 3 * 1.2
    untouched = np.zeros((3, 8, 8), np.float32)
    assert not random_erasing(untouched, np.random.default_rng(0), prob=0.0).any()


def test_train_transform_output_and_switches(photo: Image.Image) -> None:
    data = DataConfig(img_size=32, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = train_transform(photo, AugmentConfig(), data, np.random.default_rng(1))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    plain = AugmentConfig(random_resized_crop=False, hflip=0.0, randaugment=None, reprob=0.0)
    y = train_transform(photo, plain, data, np.random.default_rng(1))
    np.testing.assert_allclose(y, normalize(photo.resize((32, 32), Image.Resampling.BICUBIC), data))
