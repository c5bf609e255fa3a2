"""Fixtures for the CLI tests: the installed console script, a tiny checkpoint on disk, a temporary store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tiny import TINY, random_state

VITSERVE = Path(sys.executable).with_name("vitserve")  # the console script pip installed beside python
CLI_CONFIG = TINY
CLI_TIMEOUT_S = 300


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
    from vitserve.model_store.weights import write_weights

    folder = tmp_path_factory.mktemp("tiny-ckpt")
    write_weights(random_state(0), folder / "model.ckpt")
    (folder / "config.json").write_text(CLI_CONFIG.to_json())
    (folder / "data.json").write_text(json.dumps({"img_size": 32, "crop_pct": 0.875}))
    (folder / "labels.json").write_text(json.dumps([f"digit-{i}" for i in range(10)]))
    return folder
