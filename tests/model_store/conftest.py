"""Fixtures for the model-store tests: a tiny ViT config, random weights for it, and an empty store."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tiny import TINY, TINY_DATA, publish_tiny
from vitserve.model_store import Card, ModelStore
from vitserve.vit.config import DataConfig, ViTConfig


@pytest.fixture
def tiny_config() -> ViTConfig:
    return TINY


@pytest.fixture
def tiny_data() -> DataConfig:
    return TINY_DATA


@pytest.fixture
def publish(store: ModelStore) -> Callable[..., Card]:
    """``publish(name, seed=0, top1=None, dataset="val", **kwargs)``: a tiny random version into ``store``."""

    def _publish(name: str = "tiny", seed: int = 0, top1: float | None = None, dataset: str = "val", **kw) -> Card:
        metrics = {dataset: {"top1": top1}} if top1 is not None else None
        return publish_tiny(store, name, seed, metrics=metrics, **kw)

    return _publish
