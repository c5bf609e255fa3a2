"""Evaluation counts every image, scores like a reference, and predicts what model + preprocess give."""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from tests.tiny import TINY
from vitserve.training.data import scan_image_folder
from vitserve.training.evaluate import evaluate_folder, plot_confusion, score
from vitserve.vit.config import DataConfig
from vitserve.vit.model import create_model
from vitserve.vit.preprocess import preprocess

THREE_CLASSES = TINY.replace(num_classes=3)


def test_score_counts_top1_top5_and_confusion() -> None:
    logits = np.array([[3, 2, 1, 0, 0, 0], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]], np.float32)
    labels = np.array([0, 0, 2])
    result = score(logits, labels, ["a", "b", "c", "d", "e", "f"])
    assert result.top1 == pytest.approx(1 / 3)
    assert result.top5 == pytest.approx(2 / 3)  # sample 1's label 0 is its 6th choice
    assert result.per_class == {"a": 0.5, "c": 0.0}
    assert result.confusion[0].tolist() == [1, 0, 0, 0, 0, 1]
    metrics = result.metrics(["a", "b", "c", "d", "e", "f"])
    assert metrics["num_images"] == 3.0 and metrics["class_acc/0_a"] == 0.5 and "class_acc/1_b" not in metrics


@pytest.mark.slow
def test_every_image_is_counted_and_predictions_equal_model_plus_preprocess(color_folder: Path) -> None:
    ms.set_seed(0)
    model = create_model(THREE_CLASSES)
    data = DataConfig(img_size=32, crop_pct=0.875)
    folder = scan_image_folder(color_folder)
    result = evaluate_folder(model, folder, data, batch_size=4, workers=2)  # 18 images: 4 batches + 2
    assert result.num_images == len(folder) == 18
    assert result.confusion.sum() == 18
    # The same images through the shared preprocessing and the model directly, in one batch.
    direct = model(ms.Tensor(preprocess([path for path, _ in folder.samples], data))).asnumpy()
    np.testing.assert_allclose(result.logits, direct, rtol=1e-4, atol=1e-5)
    assert result.predictions.tolist() == direct.argmax(axis=1).tolist()
    assert result.top1 == pytest.approx(float((direct.argmax(axis=1) == folder.labels).mean()))


def test_confusion_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_confusion(np.array([[3, 1], [0, 4]]), ["cat", "dog"], tmp_path / "cm.png", title="t")
    assert path is not None
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert plot_confusion(np.zeros((101, 101), int), [str(i) for i in range(101)], tmp_path / "big.png") is None
