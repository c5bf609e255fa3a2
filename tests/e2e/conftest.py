"""End-to-end fixtures: a real store with a tiny random ViT, and a real ``vitserve serve`` process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.e2e_server import SERVER_SETTINGS, ServerProcess
from tests.tiny import publish_tiny
from vitserve.model_store import ModelStore


@pytest.fixture(scope="module")
def e2e_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("e2e") / "store")
    publish_tiny(store, seed=0, aliases=("production",))
    publish_tiny(store, seed=1)
    return store


@pytest.fixture(scope="module")
def server(e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(e2e_store.root, tmp_path_factory.mktemp("logs") / "server.log", **SERVER_SETTINGS)
    try:
        yield proc.start()
    finally:
        proc.stop()
