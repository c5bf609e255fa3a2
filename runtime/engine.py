"""Inference engines: the small interface the batcher calls, and the MindSpore GRAPH_MODE implementation.

Static shapes with padding, not dynamic shape: on this CPU, the tiny test model (32 px, width 32, depth 2)
ran a batch of 1/2/4/8/16 in 7.8/3.9/4.7/7.3/10.7 ms compiled per bucket, and 15/16/17/22/24 ms with one
dynamic-batch graph (``Cell.set_inputs`` with ``None`` batch); the dynamic graph compiles once (≈5 s vs ≈1.5 s
per bucket) but runs 1.5-3× slower per call. The compile cache removes most of the per-bucket cost on restart.
Padding waste is reported as a metric (``vitserve_padding_rows_total``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from mindspore import nn

    from vitserve.model_store import Card, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine; the service derives these from its settings (``Settings.engine_options``)."""

    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)  # the sizes warmed (and, for MindSpore, compiled) before serving
    device_target: str = "CPU"  # CPU, GPU or Ascend: picks the backend when the kind is ``auto``
    threads: int | None = None  # CPU engines' intra-op threads; None: one per available core
    precision: str = "auto"  # fp32, int8, or auto: what the version's card opted into (else fp32)


@runtime_checkable
class Engine(Protocol):
    """Runs a model on a float32 batch. Implementations need not be thread-safe: one thread calls them."""

    batch_sizes: tuple[int, ...]  # the batch sizes ``warmup`` prepares; ``run`` accepts any B ≥ 1

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 → ``(B, num_classes)`` float32 logits."""
        ...

    def warmup(self) -> None:
        """Compile/prepare every size in ``batch_sizes`` so that no request pays for it."""
        ...


def bucket_for(batch_sizes: Sequence[int], n: int) -> int:
    """The smallest size in ``batch_sizes`` that holds ``n`` rows (the largest when none does)."""
    fits = [size for size in batch_sizes if size >= n]
    return min(fits) if fits else max(batch_sizes)


class MindSporeEngine:
    """A ``VisionTransformer`` run in GRAPH_MODE on static shapes: each batch is zero-padded to a bucket size.

    The caller sets the MindSpore context (mode, device) at its entry point; this class never does.
    """

    def __init__(self, model: nn.Cell, batch_sizes: Sequence[int], *, image_shape: tuple[int, int, int]) -> None:
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be positive, got {batch_sizes}")
        self.model = model
        self.model.set_train(False)
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        self.image_shape = image_shape

    def padded_size(self, n: int) -> int:
        """Rows the model computes for a batch of ``n`` (≥ n; the difference is padding waste)."""
        largest = self.batch_sizes[-1]
        full, rest = divmod(n, largest)
        return full * largest + (bucket_for(self.batch_sizes, rest) if rest else 0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.image_shape:
            raise ValueError(f"expected a (B, {', '.join(map(str, self.image_shape))}) batch, got {batch.shape}")
        largest = self.batch_sizes[-1]
        parts = [self._run_bucket(batch[i : i + largest]) for i in range(0, len(batch), largest)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _run_bucket(self, batch: np.ndarray) -> np.ndarray:
        import mindspore as ms

        n = len(batch)
        size = bucket_for(self.batch_sizes, n)
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), dtype=batch.dtype)])
        logits = self.model(ms.Tensor(np.ascontiguousarray(batch, dtype=np.float32))).asnumpy()
        return np.asarray(logits[:n], dtype=np.float32)

    def warmup(self) -> None:
        for size in self.batch_sizes:
            self._run_bucket(np.zeros((size, *self.image_shape), dtype=np.float32))


def build_mindspore_engine(card: Card, store: ModelStore, options: EngineOptions) -> MindSporeEngine:
    """Load ``card``'s verified weights from ``store`` into a GRAPH_MODE-ready model."""
    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    state, card = store.load(card.ref)
    model = create_model(card.config)
    load_state_dict(model, state)
    return MindSporeEngine(model, options.batch_sizes, image_shape=card.input_shape)


# The one list of engine kinds; settings, the CLI and the benchmarks take theirs from here.
EngineKind = Literal["mindspore", "onnxruntime", "openvino"]
EngineChoice = Literal["auto", EngineKind]  # auto: the fastest measured on the device (``resolve_kind``)
ENGINE_KINDS: tuple[EngineKind, ...] = get_args(EngineKind)
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINE_KINDS)

# Backends other than MindSpore live in their own modules (optional packages); imported only when chosen.
_BACKENDS: dict[str, tuple[str, str]] = {
    "mindspore": ("vitserve.runtime.engine", "build_mindspore_engine"),
    "onnxruntime": ("vitserve.runtime.onnx_engine", "build_onnxruntime_engine"),
    "openvino": ("vitserve.runtime.openvino_engine", "build_openvino_engine"),
}


def resolve_kind(kind: str, device_target: str) -> str:
    """``auto`` → the backend for the device: on CPU the fastest measured one (OpenVINO on the MindSpore
    export; benchmarks/README.md has the numbers), on Ascend/GPU MindSpore itself."""
    if kind != "auto":
        return kind
    if device_target != "CPU":
        return "mindspore"
    # The CPU runtimes are dependencies, but an image built without them still serves: auto never fails for them.
    if all(importlib.util.find_spec(module) is not None for module in ("openvino", "onnx")):
        return "openvino"
    log.warning("auto engine: openvino/onnx not installed; serving with mindspore")
    return "mindspore"


def build_engine(kind: str, card: Card, store: ModelStore, options: EngineOptions) -> Engine:
    """The engine ``kind`` (``auto``, ``mindspore``, ``onnxruntime``, ``openvino``) for ``card``'s version."""
    resolved = resolve_kind(kind, options.device_target)
    if resolved not in _BACKENDS:
        raise ValueError(f"unknown engine {kind!r}; known: auto, {', '.join(_BACKENDS)}")
    module_name, factory_name = _BACKENDS[resolved]
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, factory_name)
    except (ImportError, AttributeError) as err:
        if kind == "auto" and resolved != "mindspore":
            # A CPU runtime that is present but broken: auto still serves, with MindSpore.
            log.warning("engine %r not installed (%s); auto falls back to mindspore", resolved, err)
            return build_engine("mindspore", card, store, options)
        raise RuntimeError(f"engine {resolved!r} is not available here: {err}") from err
    engine: Engine = factory(card, store, options)
    log.info("%s: %s engine, batch sizes %s", card.ref, resolved, engine.batch_sizes)
    return engine
