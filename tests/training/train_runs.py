"""Helpers of the training tests that run real training processes: a tiny recipe written as YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from tests.tiny import TINY

REPO = Path(__file__).resolve().parents[2]

# The tiny model as a recipe's model_args (the head is sized by the data's classes).
TINY_MODEL = {k: getattr(TINY, k) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "global_pool")}


def tiny_recipe(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The full MAE recipe (mixup, cutmix, RandAugment, erasing, drop-path, layer decay) on a tiny ViT."""
    recipe: dict[str, Any] = {
        "model": "vit_base_p16",
        "model_args": TINY_MODEL,
        "data_args": {"crop_pct": 1.0},
        "epochs": 5,
        "warmup_epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "drop_path_rate": 0.1,
        "num_workers": 2,
        "eval_batch_size": 8,
        "log_every": 1,
        "output_dir": str(tmp_path / "runs"),
    }
    recipe.update(changes)
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def env() -> dict[str, str]:
    """The environment of a child process: the repository importable, no inherited store root."""
    child = {k: v for k, v in os.environ.items() if k != "VITSERVE_STORE_ROOT"}
    child["PYTHONPATH"] = str(REPO) + os.pathsep + child.get("PYTHONPATH", "")
    # msrun starts its workers with the `python` on PATH: make that this interpreter (as an activated venv does).
    child["PATH"] = str(Path(sys.executable).parent) + os.pathsep + child.get("PATH", "")
    return child


def vitserve(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitserve.admin.main", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_folder(root: Path, counts: dict[str, int], *, size: int = 40, seed: int = 0) -> Path:
    """root/<class>/<i>.png with class-dependent colours (so a model can learn them) plus noise."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = np.zeros((size, size, 3), np.float32)
            base[..., index % 3] = 200.0
            pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root
