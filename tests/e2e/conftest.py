"""End-to-end fixtures: a real store with a tiny random ViT, and a real ``vitserve serve`` process."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from e2e_server import ServerProcess
from PIL import Image

from model_store import Card, ModelStore
from vit.config import DataConfig, ViTConfig
from vit.convert_tables import expected_shapes

TINY = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
ADMIN_TOKEN = "e2e-admin-token-0123456789"


def publish_tiny(store: ModelStore, seed: int, **kwargs: object) -> Card:
    rng = np.random.default_rng(seed)
    state = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in expected_shapes(TINY).items()}
    labels = [f"digit{i}" for i in range(10)]
    return store.publish("tiny", state, TINY, DataConfig(img_size=32), labels, lineage={"e2e": seed}, **kwargs)  # type: ignore[arg-type]


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def e2e_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("e2e") / "store")
    publish_tiny(store, 0, aliases=("production",))
    publish_tiny(store, 1)
    return store


SERVER_SETTINGS: dict[str, object] = {
    "default_model": "tiny",
    "max_batch_size": 4,
    "max_delay_ms": 30,
    "queue_size": 16,
    "max_images": 16,
    "decode_workers": 2,
    "admin_token": ADMIN_TOKEN,
    "drain_timeout_s": 20,
    "log_level": "INFO",
}


@pytest.fixture(scope="module")
def server(e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(e2e_store.root, tmp_path_factory.mktemp("logs") / "server.log", **SERVER_SETTINGS)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
