"""Service tests run the app in-process (httpx's ASGI transport, the lifespan entered by hand) on a fake engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.service.fakes import ADMIN_TOKEN, FakeFactory
from tests.tiny import publish_tiny
from vitserve.model_store import ModelStore
from vitserve.service.app import create_app
from vitserve.service.settings import Settings


@pytest.fixture(scope="session")
def tiny_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with tiny:1 (production) and tiny:2, built once (publishing imports MindSpore)."""
    root = tmp_path_factory.mktemp("store-template")
    store = ModelStore(root)
    publish_tiny(store, seed=0, aliases=("production",))
    publish_tiny(store, seed=1)
    return root


@pytest.fixture
def store(tiny_store_template: Path, tmp_path: Path) -> ModelStore:
    import shutil

    root = tmp_path / "store"
    shutil.copytree(tiny_store_template, root)
    return ModelStore(root)


@pytest.fixture
def make_settings(store: ModelStore) -> Callable[..., Settings]:
    def _make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "store_root": store.root,
            "default_model": "tiny",
            "max_batch_size": 8,
            "max_delay_ms": 20,
            "queue_size": 32,
            "decode_workers": 2,
            "admin_token": ADMIN_TOKEN,
        }
        values.update(overrides)
        return Settings(**values)

    return _make


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def serve(make_settings: Callable[..., Settings], factory: FakeFactory) -> Callable[..., Any]:
    """``async with serve(**settings) as (client, app)``; ``app_kwargs`` go to ``create_app`` (resolver, ...)."""

    @asynccontextmanager
    async def _serve(
        app_kwargs: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        app = create_app(make_settings(**overrides), engine_factory=factory, **(app_kwargs or {}))
        async with running(app) as client:
            yield client, app

    return _serve
