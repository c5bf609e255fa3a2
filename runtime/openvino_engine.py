"""The OpenVINO engine: a store version's cached ONNX export compiled by OpenVINO's CPU plugin.

Implements the service's ``Engine`` protocol. OpenVINO reads the ONNX file directly (its batch axis stays
dynamic) and keeps its own compiled-blob cache beside the export (``cache/openvino/<hint>``, one folder per
precision hint: see ``blob_cache``), keyed by OpenVINO itself on the model and the device. Every model is
compiled with an explicit precision hint: ``fp32`` is pinned to f32 (without a hint OpenVINO silently runs bf16
on a CPU with bf16 instructions), and ``precision="bf16"`` asks for bfloat16 only where the CPU has native bf16
(``runtime.cpu_precision.native_bf16``); elsewhere it runs f32 and logs a warning. ``precision`` says what the
compiled model actually runs (``"fp32"`` or ``"bf16"``), asked of OpenVINO, not assumed. ``openvino`` is
imported only when this engine is built.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.locking import exclusive_lock
from vitserve.model_store.store import ModelStore
from vitserve.runtime.cpu_precision import matmul_precisions, native_bf16, precision_name
from vitserve.runtime.export_cache import CachedGraph
from vitserve.runtime.onnx_engine import (
    OnnxRuntimeEngine,
    check_batch,
    default_threads,
    engine_options,
    input_shape,
    logged,
)

if TYPE_CHECKING:
    import openvino as ov

    from vitserve.runtime.engine import EngineOptions

logger = logging.getLogger(__name__)

_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoEngine:
    """Runs ``(B, C, H, W)`` float32 batches through an ONNX model with OpenVINO on CPU."""

    name = "openvino"

    def __init__(
        self,
        path: str | Path | CachedGraph,
        *,
        input_shape: tuple[int, int, int],
        batch_sizes: Sequence[int] = (1,),
        threads: int | None = None,
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ) -> None:
        """``path``: an ONNX file or IR, or a cached export's verified bytes (``export_cache``), which are what
        is compiled: the file may have changed since it was checked."""
        import openvino as ov

        if precision not in _PRECISION_HINTS:
            raise ValueError(f"unknown OpenVINO precision {precision!r}; known: {', '.join(_PRECISION_HINTS)}")
        if precision == "bf16" and not native_bf16():
            logger.warning("bf16 requested but this CPU has no native bf16 (or ONEDNN_MAX_CPU_ISA caps it): f32")
            precision = "fp32"
        self.path = path.path if isinstance(path, CachedGraph) else Path(path)
        self.batch_sizes = tuple(batch_sizes)
        self.input_shape = tuple(input_shape)
        self.threads = threads or default_threads()
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            # One stream: the service batches requests itself; more streams would split the cores.
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
        }
        with contextlib.ExitStack() as stack:
            if cache_dir is not None:
                blobs = stack.enter_context(blob_cache(cache_dir, _PRECISION_HINTS[precision]))
                core.set_property({"CACHE_DIR": str(blobs)})
            self.compiled = core.compile_model(_read_model(core, path), "CPU", config)
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))  # what runs
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: serialise callers
        self.version = ov.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` float32 → ``(B, num_classes)`` float32 logits."""
        batch = check_batch(batch, self.input_shape)
        with self._lock:
            result = self._request.infer({0: batch})
            return np.array(result[self.compiled.output(0)], dtype=np.float32)

    def warmup(self) -> None:
        """Run every bucket size once (the plugin specialises its kernels per input shape on first use)."""
        for size in self.batch_sizes:
            self.run(np.zeros((size, *self.input_shape), np.float32))


def _read_model(core: ov.Core, path: str | Path | CachedGraph) -> ov.Model:
    """The model from a file, or from a cached export's verified bytes (an IR's weights as a ``u8`` tensor)."""
    import openvino as ov

    if not isinstance(path, CachedGraph):
        return core.read_model(str(path))
    if path.weights is None:
        return core.read_model(path.model)
    return core.read_model(path.model, ov.Tensor(np.frombuffer(path.weights, dtype=np.uint8)))


@contextlib.contextmanager
def blob_cache(root: Path, hint: str) -> Iterator[Path]:
    """OpenVINO's compiled-blob folder for models compiled at ``hint``, under ``root``, one per hint, held locked
    (``.<hint>.lock`` beside it) for the block: compile into it inside.

    OpenVINO names a blob after the model, not the precision hint: two processes compiling one export at f32 and
    at bf16 (two servers of one version, a replica and its bf16 canary) write the same file, each replacing the
    other's, and one of them fails ("cannot set permissions: No such file or directory"). Replicas compiling at
    one hint together also wrote one blob at once (1 trial in 20 failed so); under the lock the next one imports
    it instead. Blobs left directly in ``root`` by the earlier one-folder layout are removed.
    """
    for stale in root.glob("*.blob"):
        stale.unlink(missing_ok=True)
    folder = root / hint
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{hint}.lock"):
        yield folder


def build_openvino_engine(card: Card, store: ModelStore, options: EngineOptions) -> OpenVinoEngine | OnnxRuntimeEngine:
    """The service's factory: ``card``'s version on OpenVINO. A version that opted into ``int8`` (dynamic) gets
    ONNX Runtime's int8 engine instead (that quantised graph is ONNX Runtime's); ``int8-static`` is OpenVINO on
    the version's NNCF-quantised IR; ``bf16`` is OpenVINO bf16 (f32 on a CPU without native bf16)."""
    threads, precision = engine_options(card, options)
    if precision == "int8":
        from vitserve.runtime.onnx_engine import onnxruntime_engine_for

        logger.info("%s opted into int8: serving it with ONNX Runtime's int8 engine", card.ref)
        return onnxruntime_engine_for(store, card, batch_sizes=options.batch_sizes, precision="int8", threads=threads)
    return openvino_engine_for(store, card, batch_sizes=options.batch_sizes, precision=precision, threads=threads)


def openvino_engine_for(
    store: ModelStore,
    card: Card,
    *,
    batch_sizes: Sequence[int],
    precision: str = "fp32",
    threads: int | None = None,
) -> OpenVinoEngine:
    """An engine for ``card``'s version: its cached fp32 export (exported on first use) at ``fp32``/``bf16``,
    or its statically quantised IR at ``int8-static`` (``MissingArtefact`` when it was never made)."""
    from vitserve.runtime.export_cache import cached_graph, static_int8_graph

    static = precision == "int8-static"
    engine = OpenVinoEngine(
        static_int8_graph(store, card) if static else cached_graph(store, card, "fp32"),
        input_shape=input_shape(card),
        batch_sizes=batch_sizes,
        threads=threads,
        precision="fp32" if static else precision,  # the IR's FakeQuantize nodes make it int8, not a hint
        cache_dir=store.cache_dir(card) / "openvino",
    )
    if static:
        # Asked of OpenVINO: an IR whose FakeQuantize nodes the plugin could not fuse would run in float.
        engine.precision = "int8" if matmul_precisions(engine.compiled) & {"u8", "i8"} else engine.precision
    return logged(engine, card)
