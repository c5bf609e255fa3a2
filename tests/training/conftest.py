"""Fixtures of the training tests: small real ImageFolders written as PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.train_runs import write_folder


@pytest.fixture
def color_folder(tmp_path: Path) -> Path:
    """Three classes ("blue", "green", "red") of 40×40 PNGs: 7, 6, 5 images."""
    return write_folder(tmp_path / "colors", {"red": 5, "green": 6, "blue": 7})
