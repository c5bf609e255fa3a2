"""Fixtures shared by every test package: a store, a seeded generator, the async test backend.

The tiny model itself (``TINY``, ``random_state``, ``publish_tiny``) is in ``tests.tiny``: constants are
imported, fixtures are injected.
"""

from __future__ import annotations

import os
from pathlib import Path

# As `vitserve serve` does before MindSpore picks protobuf's pure-Python runtime (admin/serve_cmd.py): the
# in-process gRPC tests then parse as the server does.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb")

import numpy as np
import pytest

from vitserve.model_store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """An empty store in the test's temporary directory (tests/service overrides it with a filled one)."""
    return ModelStore(tmp_path / "store")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
