"""`vitserve train`, `eval` and `bootstrap` through the CLI: the embedded default model end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitserve.admin.main import main
from vitserve.model_store import ModelStore

VITSERVE = Path(sys.executable).with_name("vitserve")  # the installed console script
# Measured: the shipped digits recipe reaches 0.958 on the 359 validation images (seed 0, 6 epochs);
# chance is 0.1.
DIGITS_MIN_TOP1 = 0.93


def _vitserve(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSERVE_")}
    return subprocess.run(
        [str(VITSERVE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_train_needs_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 1
    assert "--config is required" in capsys.readouterr().err


def test_train_reports_a_bad_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "digits", "--data", str(tmp_path / "missing"), "--store", str(tmp_path)]) == 1
    assert "data folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_bootstrap_trains_evaluates_and_publishes_digits(tmp_path: Path) -> None:
    store_dir, data_dir = tmp_path / "store", tmp_path / "digits"
    done = _vitserve(
        "bootstrap", "--store", store_dir, "--data-dir", data_dir, "--output-dir", tmp_path / "runs", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = ModelStore(store_dir)
    card = store.resolve("digits-vit")  # the production alias
    assert store.aliases("digits-vit") == {"production": 1}
    top1 = card.metrics["digits-val"]["top1"]
    assert top1 >= DIGITS_MIN_TOP1
    assert card.metrics["digits-val"]["num_images"] == 359.0
    assert "scikit-learn's digits" in card.description and f"{top1:.4f}" in card.description
    assert card.labels == [str(d) for d in range(10)] and card.lineage["init"] == "scratch"
    assert f"{top1:.4f}" in done.stdout

    again = _vitserve("bootstrap", "--store", store_dir, "--data-dir", data_dir, cwd=tmp_path)
    assert again.returncode == 0 and "already has digits-vit" in again.stdout
    assert [c.version for c in store.versions("digits-vit")] == [1]

    evaluated = _vitserve(
        "eval",
        "--model",
        "digits-vit",
        "--data",
        data_dir / "val",
        "--store",
        store_dir,
        "--dataset-name",
        "digits-val-cli",
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "359 images" in evaluated.stdout
    recorded = store.resolve("digits-vit:1").metrics
    assert recorded["digits-val-cli"]["top1"] == pytest.approx(top1)  # the same weights, the same images
    assert (store.version_dir(card) / "confusion_digits-val-cli.png").is_file()
