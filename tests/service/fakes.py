"""A fake engine with the real interface, tiny images, and a store holding a tiny random model."""

from __future__ import annotations

import io
import threading
import time
import weakref
from collections.abc import MutableMapping
from pathlib import Path

import numpy as np
from PIL import Image

from tests.tiny import TINY_DATA
from vitserve.model_store import Card, ModelStore
from vitserve.vit.decode import decode_image
from vitserve.vit.preprocess import transform

ADMIN_TOKEN = "test-admin-token-0123456789"


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def png(level: int, size: tuple[int, int] = (40, 36)) -> bytes:
    """A solid grey PNG; different levels give the fake engine different classes."""
    buf = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(buf, format="PNG")
    return buf.getvalue()


def fake_class(x: np.ndarray, num_classes: int = 10) -> int:
    """The class the fake engine predicts for one preprocessed image (3, H, W)."""
    return round(float(x[0, 0, 0]) * 1000) % num_classes


def expected_class(data: bytes) -> int:
    return fake_class(transform(decode_image(data), TINY_DATA))


class FakeEngine:
    """Logits peak at ``fake_class(image)``; records every batch size; optional compute time and failure."""

    batch_sizes = (1, 2, 4, 8)

    def __init__(self, card: Card, *, delay_s: float = 0.0, row_s: float = 0.0, fail_warmup: bool = False) -> None:
        self.num_classes = card.config.num_classes
        self.delay_s, self.row_s, self.fail_warmup = delay_s, row_s, fail_warmup
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.warmed = False
        self.fail_next: Exception | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        self.threads.add(threading.current_thread().name)
        if self.delay_s or self.row_s:  # a batch's compute time: fixed, plus per image
            time.sleep(self.delay_s + self.row_s * len(batch))
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        logits = np.zeros((len(batch), self.num_classes), dtype=np.float32)
        for i, x in enumerate(batch):
            k = fake_class(x, self.num_classes)
            logits[i] = -np.abs(np.arange(self.num_classes) - k, dtype=np.float32)
        return logits

    def warmup(self) -> None:
        if self.fail_warmup:
            raise RuntimeError("warm-up failed on purpose")
        self.warmed = True

    def padded_size(self, n: int) -> int:
        return min((s for s in self.batch_sizes if s >= n), default=n)


class FakeFactory:
    """``engine_factory`` for ``create_app``: verifies the weights' sha256 like the real one, keeps the engines.

    Each batch takes ``delay_s`` + ``row_s`` per image, each build ``build_s``, and each engine holds ``cost_bytes``
    of fake memory while it lives: ``resident`` is what a process holding the live engines would have grown by (a
    registry reads it as its RSS in tests: ``registry.residency.read_rss = factory.rss``), ``peak`` its maximum."""

    def __init__(self, delay_s: float = 0.0, *, row_s: float = 0.0, build_s: float = 0.0, cost_bytes: int = 0) -> None:
        self.delay_s, self.row_s, self.build_s, self.cost_bytes = delay_s, row_s, build_s, cost_bytes
        # With a memory cost, engines are kept weakly: the fake memory goes when the registry drops the engine.
        self.engines: MutableMapping[str, FakeEngine] = weakref.WeakValueDictionary() if cost_bytes else {}
        self.fail_warmup: set[str] = set()
        self.builds: list[str] = []
        self.resident = self.peak = 0
        self._lock = threading.Lock()  # engines are built on the builder thread and freed wherever they die

    def __call__(self, card: Card, store: ModelStore, options: object) -> FakeEngine:
        store.verify(card.ref)
        if self.build_s:
            time.sleep(self.build_s)
        engine = FakeEngine(card, delay_s=self.delay_s, row_s=self.row_s, fail_warmup=card.ref in self.fail_warmup)
        self.engines[card.ref] = engine
        self.builds.append(card.ref)
        if self.cost_bytes:
            self._hold(self.cost_bytes)
            weakref.finalize(engine, self._hold, -self.cost_bytes)
        return engine

    def rss(self) -> int:
        return self.resident

    def _hold(self, delta: int) -> None:
        with self._lock:
            self.resident += delta
            self.peak = max(self.peak, self.resident)


def corrupt(store: ModelStore, card: Card) -> Path:
    path = store.version_dir(card) / card.weights
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    return path


class Clock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
