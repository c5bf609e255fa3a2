"""The training config: shipped recipes load, unknown fields fail, digits export is fixed by its seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitserve.training.config import TrainConfig, load_config
from vitserve.training.digits import export_digits, validation_mask


def test_shipped_mae_recipe_is_the_seeds() -> None:
    config = load_config("vit_base_p16_224_100ep")
    assert (config.epochs, config.warmup_epochs, config.batch_size) == (100, 5, 32)
    assert (config.base_lr, config.min_lr, config.weight_decay, config.layer_decay) == (5e-4, 1e-6, 0.05, 0.65)
    assert config.betas == (0.9, 0.999) and config.eps == 1e-8 and config.drop_path_rate == 0.1
    aug = config.augment
    assert aug.scale == (0.08, 1.0) and aug.hflip == 0.5 and aug.randaugment == "rand-m9-mstd0.5-inc1"
    assert (aug.reprob, aug.mixup, aug.cutmix, aug.smoothing) == (0.25, 0.8, 1.0, 0.1)
    assert config.peak_lr(256) == pytest.approx(5e-4)


def test_config_round_trips_and_rejects_unknown_fields(tmp_path: Path) -> None:
    config = load_config("digits")
    assert TrainConfig.from_dict(config.to_dict()) == config
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="shipped configs: digits"):
        load_config("nope")
    with pytest.raises(ValueError, match="augment"):
        TrainConfig.from_dict({"augment": {"mixup_alpha": 1}})


def test_digits_export_is_a_fixed_stratified_split(tmp_path: Path) -> None:
    export = export_digits(tmp_path / "d", size=16, seed=0)
    assert export.train_count + export.val_count == 1797
    assert sorted(p.name for p in export.train_dir.iterdir()) == [str(d) for d in range(10)]
    val_files = sorted(str(p.relative_to(export.val_dir)) for p in export.val_dir.rglob("*.png"))
    assert len(val_files) == export.val_count
    for digit in range(10):  # ~20 % of every class
        n_val = len(list((export.val_dir / str(digit)).iterdir()))
        n_train = len(list((export.train_dir / str(digit)).iterdir()))
        assert abs(n_val / (n_val + n_train) - 0.2) < 0.01
    labels = np.repeat(np.arange(10), 180)
    first = validation_mask(labels, seed=0)
    assert np.array_equal(first, validation_mask(labels, seed=0))  # fixed by the seed
    assert not np.array_equal(first, validation_mask(labels, seed=1))
    with Image.open(next(export.train_dir.rglob("*.png"))) as img:
        assert img.size == (16, 16) and img.mode == "RGB"
        assert len(np.unique(np.asarray(img))) > 2
