"""Fixtures for the model-store tests: a tiny ViT config, random weights for it, and an empty store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny_weights import TINY_CONFIG, TINY_DATA, random_state

from model_store import Card, ModelStore
from vit.config import DataConfig, ViTConfig


@pytest.fixture
def tiny_config() -> ViTConfig:
    return TINY_CONFIG


@pytest.fixture
def tiny_data() -> DataConfig:
    return TINY_DATA


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.fixture
def publish(store: ModelStore) -> Callable[..., Card]:
    """``publish(name, seed=0, top1=None, dataset="val", **kwargs)``: a tiny random version into ``store``."""

    def _publish(name: str = "tiny", seed: int = 0, top1: float | None = None, dataset: str = "val", **kw) -> Card:
        metrics = {dataset: {"top1": top1}} if top1 is not None else None
        labels = [f"class{i}" for i in range(TINY_CONFIG.num_classes)]
        kw.setdefault("lineage", {"test": seed})
        return store.publish(name, random_state(seed), TINY_CONFIG, TINY_DATA, labels, metrics=metrics, **kw)

    return _publish


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
