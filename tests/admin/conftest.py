"""Fixtures for the CLI tests: the installed console script, a tiny checkpoint on disk, a temporary store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vit.config import ViTConfig
from vit.convert_tables import expected_shapes

VITSERVE = Path(sys.executable).with_name("vitserve")  # the console script pip installed beside python
CLI_CONFIG = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
CLI_TIMEOUT_S = 300


def random_state(config: ViTConfig, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in sorted(expected_shapes(config).items())}


@pytest.fixture(scope="module")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env=None)``: run ``vitserve`` as a user would; never fails the test by itself."""
    assert VITSERVE.is_file(), f"console script missing: {VITSERVE} (pip install -e .)"

    def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("VITSERVE_")}
        return subprocess.run(
            [str(VITSERVE), *map(str, args)],
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    return _run


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like `vitserve convert --out` writes: model.ckpt, config.json, data.json, plus labels.json."""
    from model_store.weights import write_weights

    folder = tmp_path_factory.mktemp("tiny-ckpt")
    write_weights(random_state(CLI_CONFIG, 0), folder / "model.ckpt")
    (folder / "config.json").write_text(CLI_CONFIG.to_json())
    (folder / "data.json").write_text(json.dumps({"img_size": 32, "crop_pct": 0.875}))
    (folder / "labels.json").write_text(json.dumps([f"digit-{i}" for i in range(10)]))
    return folder
