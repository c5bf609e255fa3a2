"""``vitserve predict DIR``: every image under a folder on a CPU engine, unreadable files skipped (exit 5);
``vitserve train --skip-corrupt``; ``eval --json``; ``vitserve --version``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny import LABELS, publish_tiny
from tests.training.train_runs import tiny_recipe, write_folder, write_recipe
from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_PARTIAL
from vitserve.admin.main import main
from vitserve.model_store import ModelStore
from vitserve.runtime.pipeline import pipeline


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve real digit images (scikit-learn) in nested folders, a corrupt PNG, and a file that is no image."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("photos")
    digits = load_digits()
    for i in range(12):
        folder = root / f"set{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels).resize((40, 40)).save(folder / f"digit{i:02d}.png")
    (root / "set1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict-store")
    publish_tiny(ModelStore(root), seed=4)
    return root


def test_folder_to_jsonl_skips_and_lists_the_unreadable(
    photos: Path, folder_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "preds.jsonl"
    argv = ["predict", str(photos), "--model", "tiny", "--store", str(folder_store), "--batch-size", "5"]
    code = main([*argv, "--out", str(out), "--engine", "onnxruntime", "--top-k", "2"])
    _, err = capsys.readouterr()
    assert code == EXIT_PARTIAL
    assert "skipped" in err and "broken.png" in err and "notes.txt" not in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["predictions"]) == 2 for r in rows)
    assert rows == sorted(rows, key=lambda r: r["path"])
    # The fast engine agrees with the MindSpore pipeline on the same files.
    reference = pipeline("image_classification", model="tiny", store=ModelStore(folder_store))
    for row in rows:
        best = reference(photos / row["path"], top_k=1)[0][0]
        assert row["predictions"][0]["index"] == best["index"]
        assert row["predictions"][0]["score"] == pytest.approx(best["score"], abs=1e-4)


def test_folder_to_csv_and_the_exit_codes(
    photos: Path, folder_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(photos / "set0", clean)
    out = tmp_path / "preds.csv"
    argv = ["predict", str(clean), "--model", "tiny", "--store", str(folder_store), "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["predicted"] == 4 and summary["skipped"] == []
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {row["label_1"] for row in table} <= set(LABELS)
    assert main(["predict", str(clean), "--model", "absent", "--store", str(folder_store)]) == EXIT_NOT_FOUND
    assert main(["predict", str(tmp_path / "empty-dir-missing"), "--model", "tiny"]) != 0


@pytest.mark.slow  # a real (one-step) training run
def test_train_skip_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_folder(tmp_path / "data", {"a": 4, "b": 4}, size=32)
    (data / "a" / "bad.png").write_bytes(b"not a png at all")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, epochs=1, batch_size=4, num_workers=1))
    argv = ["train", "--config", str(recipe), "--data", str(data), "--max-steps", "1", "--no-publish"]
    argv += ["--store", str(tmp_path / "store")]
    assert main([*argv, "--run-dir", str(tmp_path / "r1")]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert main([*argv, "--run-dir", str(tmp_path / "r2"), "--skip-corrupt"]) == 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("vitserve 0.1.0 (python 3.11")


def test_eval_json(folder_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_folder(tmp_path / "val", {label: 1 for label in LABELS}, size=32)
    argv = ["eval", "--model", "tiny", "--data", str(data), "--store", str(folder_store), "--batch-size", "4"]
    assert main([*argv, "--json", "--dataset-name", "val-json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["ref"] == "tiny:1" and metrics["dataset"] == "val-json" and metrics["num_images"] == 10.0
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
