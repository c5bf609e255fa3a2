"""ImageFolder indexing, corrupt-file reporting, and the determinism of the training pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vitserve.training.config import AugmentConfig
from vitserve.training.data import (
    CorruptImages,
    DataError,
    epoch_order,
    eval_batches,
    file_list_sha256,
    scan_image_folder,
    train_batches,
)
from vitserve.vit.config import DataConfig

DATA = DataConfig(img_size=32, crop_pct=1.0)


def test_classes_are_sorted_folder_names(color_folder: Path) -> None:
    folder = scan_image_folder(color_folder)
    assert folder.classes == ["blue", "green", "red"]
    assert len(folder) == 18
    assert np.bincount(folder.labels).tolist() == [7, 6, 5]
    assert all(Path(path).parent.name == folder.classes[label] for path, label in folder.samples)


def test_val_folder_must_have_the_training_classes(color_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="differ from the expected classes"):
        scan_image_folder(color_folder, classes=["blue", "green"])


def _corrupt(color_folder: Path) -> tuple[Path, Path]:
    text = color_folder / "red" / "notes.png"
    text.write_text("this is not an image")
    truncated = color_folder / "green" / "cut.png"
    truncated.write_bytes((color_folder / "green" / "000.png").read_bytes()[:200])
    return text, truncated


def test_corrupt_files_fail_the_run_by_name(color_folder: Path) -> None:
    text, truncated = _corrupt(color_folder)
    with pytest.raises(CorruptImages) as info:
        scan_image_folder(color_folder, on_corrupt="fail")
    assert sorted(b.path for b in info.value.bad) == sorted([str(truncated), str(text)])
    assert str(text) in str(info.value) and str(truncated) in str(info.value)
    assert all(b.reason for b in info.value.bad)


def test_corrupt_files_are_skipped_with_a_warning(color_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    text, truncated = _corrupt(color_folder)
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(color_folder, on_corrupt="skip")
    assert len(folder) == 18
    assert {b.path for b in folder.skipped} == {str(text), str(truncated)}
    assert str(text) in caplog.text and str(truncated) in caplog.text


def test_file_list_hash_changes_with_the_files(color_folder: Path) -> None:
    before = file_list_sha256(scan_image_folder(color_folder))
    (color_folder / "red" / "000.png").rename(color_folder / "red" / "zzz.png")
    assert file_list_sha256(scan_image_folder(color_folder)) != before


def test_eval_batches_keep_every_image_in_order(color_folder: Path) -> None:
    folder = scan_image_folder(color_folder)
    batches = list(eval_batches(folder, DATA, batch_size=4, workers=2))
    assert [len(labels) for _, labels in batches] == [4, 4, 4, 4, 2]
    assert np.concatenate([labels for _, labels in batches]).tolist() == folder.labels.tolist()
    assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][0].dtype == np.float32


def _epoch(folder_root: Path, *, workers: int, start_step: int = 0, rank: int = 0, world: int = 1, batch: int = 4):
    folder = scan_image_folder(folder_root)
    return list(
        train_batches(
            folder,
            seed=3,
            epoch=1,
            batch_size=batch,
            start_step=start_step,
            rank=rank,
            world_size=world,
            aug=AugmentConfig(reprob=0.5),
            data=DATA,
            workers=workers,
        )
    )


def test_training_batches_are_a_pure_function_of_seed_epoch_and_position(color_folder: Path) -> None:
    one = _epoch(color_folder, workers=1)
    three = _epoch(color_folder, workers=2)
    assert len(one) == 18 // 4
    for (a, la), (b, lb) in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)  # worker count changes nothing
        np.testing.assert_array_equal(la, lb)
    resumed = _epoch(color_folder, workers=2, start_step=2)
    np.testing.assert_array_equal(resumed[0][0], one[2][0])  # resuming mid-epoch redraws the same batch
    # Two ranks with half the batch see exactly the single worker's global batch, rank 0 first.
    rank0 = _epoch(color_folder, workers=2, rank=0, world=2, batch=2)
    rank1 = _epoch(color_folder, workers=2, rank=1, world=2, batch=2)
    np.testing.assert_array_equal(np.concatenate([rank0[1][0], rank1[1][0]]), one[1][0])


def test_epochs_are_shuffled_differently() -> None:
    first, second = epoch_order(20, seed=0, epoch=0, global_batch=5), epoch_order(20, seed=0, epoch=1, global_batch=5)
    assert sorted(first.ravel()) == list(range(20)) and not np.array_equal(first, second)
    with pytest.raises(DataError, match="cannot fill one global batch"):
        epoch_order(3, seed=0, epoch=0, global_batch=4)
