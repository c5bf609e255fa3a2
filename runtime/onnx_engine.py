"""The ONNX Runtime engine: a store version's cached ONNX export run on CPU.

Implements the service's ``Engine`` protocol (``batch_sizes``, ``run``, ``warmup``). The graph has a symbolic
batch axis, so one session serves every bucket size. ``onnxruntime`` is imported only when this engine is
built: the Ascend path never touches it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore
from vitserve.runtime.export_cache import CachedGraph

if TYPE_CHECKING:
    from vitserve.runtime.engine import EngineOptions
    from vitserve.runtime.openvino_engine import OpenVinoEngine

logger = logging.getLogger(__name__)

E = TypeVar("E", "OnnxRuntimeEngine", "OpenVinoEngine")  # the CPU engines


def default_threads() -> int:
    """Threads for one engine's operators: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxRuntimeEngine:
    """Runs ``(B, C, H, W)`` float32 batches through an ONNX model with ONNX Runtime's CPU provider."""

    name = "onnxruntime"
    precision = "fp32"  # what the graph computes: "int8" for a quantised export (set by the factory)

    def __init__(
        self,
        path: str | Path | CachedGraph,
        *,
        input_shape: tuple[int, int, int],
        batch_sizes: Sequence[int] = (1,),
        threads: int | None = None,
        allow_spinning: bool = False,
    ) -> None:
        """``path``: an ONNX file, or a cached export's verified bytes (``export_cache.cached_graph``), which are
        what the session is built from: the file may have changed since it was checked."""
        import onnxruntime as ort

        source = path.model if isinstance(path, CachedGraph) else str(path)
        self.path = path.path if isinstance(path, CachedGraph) else Path(path)
        self.batch_sizes = tuple(batch_sizes)
        self.input_shape = tuple(input_shape)
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # one ViT is a chain: parallelism lives inside the GEMMs
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning workers burn the cores between batches, which the image decoders need in a service.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` float32 → ``(B, num_classes)`` float32 logits."""
        batch = check_batch(batch, self.input_shape)
        (logits,) = self.session.run(None, {self.input_name: batch})
        return np.asarray(logits, dtype=np.float32)

    def warmup(self) -> None:
        """Run every bucket size once (ORT plans its memory per input shape on the first run)."""
        for size in self.batch_sizes:
            self.run(np.zeros((size, *self.input_shape), np.float32))


def check_batch(batch: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    if batch.ndim != 4 or tuple(batch.shape[1:]) != input_shape:
        raise ValueError(f"expected a (B, {', '.join(map(str, input_shape))}) batch, got {tuple(batch.shape)}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def engine_options(card: Card, options: EngineOptions) -> tuple[int | None, str]:
    """(threads, precision) for a CPU engine: the settings' values; precision ``auto`` → the version's opt-in
    (``card.serving["precision"]``, set by ``vitserve models set-precision``), else fp32."""
    precision: str = options.precision
    if precision == "auto":
        precision = card.serving.get("precision", "fp32")
    return options.threads, precision


def build_onnxruntime_engine(card: Card, store: ModelStore, options: EngineOptions) -> OnnxRuntimeEngine:
    """The service's factory: ``card``'s version on ONNX Runtime, from its cached export."""
    threads, precision = engine_options(card, options)
    return onnxruntime_engine_for(store, card, batch_sizes=options.batch_sizes, precision=precision, threads=threads)


def onnxruntime_engine_for(
    store: ModelStore,
    card: Card,
    *,
    batch_sizes: Sequence[int],
    precision: str = "fp32",
    threads: int | None = None,
    allow_spinning: bool = False,
) -> OnnxRuntimeEngine:
    """An engine for ``card``'s version from its cached export (exported on first use; see ``export_cache``)."""
    from vitserve.runtime.export_cache import cached_graph

    engine = OnnxRuntimeEngine(
        cached_graph(store, card, precision),
        input_shape=input_shape(card),
        batch_sizes=batch_sizes,
        threads=threads,
        allow_spinning=allow_spinning,
    )
    engine.precision = precision
    return logged(engine, card)


def input_shape(card: Card) -> tuple[int, int, int]:
    """``(C, H, W)`` of one image for ``card``'s model: a CPU engine's ``input_shape``."""
    return card.input_shape


def logged(engine: E, card: Card) -> E:
    """``engine``, once its build for ``card``'s version is logged: runtime and version, precision, threads."""
    logger.info(
        "%s %s engine for %s (%s, %d threads)", engine.name, engine.version, card.ref, engine.precision, engine.threads
    )
    return engine
