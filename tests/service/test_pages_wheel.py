"""A non-editable install ships the pages: the built wheel holds every static file the router serves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vitserve.service.pages.routes import ASSETS

REPO = Path(__file__).resolve().parents[2]
SKIP = ("*.venv", "build", ".git", "*.egg-info", "artefacts", "store", "data", "runs", "__pycache__", ".*_cache")


@pytest.mark.slow
def test_the_wheel_contains_the_static_files(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: an in-tree build would write next to the editable install's build/
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*SKIP))
    shutil.copytree(REPO / "tests" / "service" / "data", source / "tests" / "service" / "data")
    # The build backend itself (what pip calls), offline: pip's --no-build-isolation trips over setuptools here.
    build = f"from setuptools import build_meta; build_meta.build_wheel({str(tmp_path / 'out')!r})"
    subprocess.run([sys.executable, "-c", build], cwd=source, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "out").glob("vitserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in ASSETS if f"vitserve/service/pages/static/{name}" not in names]
    assert missing == [] and "vitserve/service/pages/routes.py" in names
