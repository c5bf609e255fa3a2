"""Everything the engine benchmark can time, each built from the same store version's weights.

A runner is built lazily (one at a time, so that a ViT-B/16 benchmark holds one copy of the weights per
engine only while it is measured) and exposes ``run(batch) -> logits``. ``role`` says what it is to the
targets: ``ours`` (the service's engines), ``peer`` (what a user would run instead) or ``reference``
(MindSpore GRAPH_MODE, the design's engine on every device).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore

logger = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RunnerSpec:
    engine: str  # e.g. "onnxruntime"
    dtype: str  # "fp32", "int8", "bf16"
    role: str  # "ours", "peer" or "reference"
    graph: str  # where the graph comes from: "mindspore", "mindspore-export", "torch", "torch-export"
    build: Callable[[BenchContext], RunFn]

    @property
    def label(self) -> str:
        return f"{self.engine}[{self.graph}] {self.dtype}"


@dataclass
class BenchContext:
    store: ModelStore
    card: Card
    threads: int
    batch_sizes: tuple[int, ...]
    workdir: Path
    _timm: Any = None

    def timm_model(self) -> Any:
        if self._timm is None:
            from vitserve.benchmarks.peers import timm_model

            state, _ = self.store.load(self.card.ref)
            self._timm = timm_model(self.card.config, state)
        return self._timm


def _mindspore(ctx: BenchContext) -> RunFn:
    from vitserve.runtime.engine import MindSporeEngine
    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    state, card = ctx.store.load(ctx.card.ref)
    model = create_model(card.config)
    load_state_dict(model, state)
    shape = (card.config.in_chans, card.config.img_size, card.config.img_size)
    return MindSporeEngine(model, ctx.batch_sizes, image_shape=shape).run


def _ours_ort(precision: str) -> Callable[[BenchContext], RunFn]:
    def build(ctx: BenchContext) -> RunFn:
        from vitserve.runtime.onnx_engine import onnxruntime_engine_for

        return onnxruntime_engine_for(
            ctx.store, ctx.card, batch_sizes=ctx.batch_sizes, precision=precision, threads=ctx.threads
        ).run

    return build


def _ours_openvino(precision: str) -> Callable[[BenchContext], RunFn]:
    def build(ctx: BenchContext) -> RunFn:
        from vitserve.runtime.openvino_engine import openvino_engine_for

        engine = openvino_engine_for(
            ctx.store, ctx.card, batch_sizes=ctx.batch_sizes, precision=precision, threads=ctx.threads
        )
        if precision == "bf16" and "bf16" not in engine.inference_precision:
            raise Unsupported(f"OpenVINO runs {engine.inference_precision} here: this CPU has no bf16 instructions")
        return engine.run

    return build


def _torch_eager(autocast_bf16: bool) -> Callable[[BenchContext], RunFn]:
    def build(ctx: BenchContext) -> RunFn:
        import torch

        if autocast_bf16 and not cpu_has_bf16():
            raise Unsupported("no native bf16 on this CPU (torch would emulate it)")
        torch.set_num_threads(ctx.threads)
        model = ctx.timm_model()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
                return model(torch.from_numpy(x)).float().numpy()

        return run

    return build


def _torch_export_path(ctx: BenchContext) -> Path:
    from vitserve.benchmarks.peers import torch_onnx_export

    path = ctx.workdir / "torch-export.onnx"
    if not path.exists():
        torch_onnx_export(ctx.timm_model(), ctx.card.config, path)
    return path


def _peer_ort(ctx: BenchContext) -> RunFn:
    import onnxruntime as ort

    options = ort.SessionOptions()  # ORT's defaults, as a user would run it, threads aside
    options.intra_op_num_threads = ctx.threads
    session = ort.InferenceSession(str(_torch_export_path(ctx)), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def _peer_openvino(ctx: BenchContext) -> RunFn:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(_torch_export_path(ctx)), "CPU", {"INFERENCE_NUM_THREADS": ctx.threads, "PERFORMANCE_HINT": "LATENCY"}
    )
    return lambda x: np.asarray(compiled(x)[0])


class Unsupported(RuntimeError):
    """This runner cannot run meaningfully on this machine (the reason is reported, not raised)."""


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


RUNNERS: tuple[RunnerSpec, ...] = (
    RunnerSpec("mindspore", "fp32", "reference", "mindspore", _mindspore),
    RunnerSpec("onnxruntime", "fp32", "ours", "mindspore-export", _ours_ort("fp32")),
    RunnerSpec("openvino", "fp32", "ours", "mindspore-export", _ours_openvino("fp32")),
    RunnerSpec("onnxruntime", "int8", "ours", "mindspore-export", _ours_ort("int8")),
    RunnerSpec("openvino", "bf16", "ours", "mindspore-export", _ours_openvino("bf16")),
    RunnerSpec("torch", "fp32", "peer", "torch", _torch_eager(False)),
    RunnerSpec("torch", "bf16", "peer", "torch", _torch_eager(True)),
    RunnerSpec("onnxruntime", "fp32", "peer", "torch-export", _peer_ort),
    RunnerSpec("openvino", "fp32", "peer", "torch-export", _peer_openvino),
)


@contextlib.contextmanager
def bench_workdir() -> Iterator[Path]:
    """A scratch directory (the benchmark's store, exports, server log), removed afterwards: a ViT-B/16 run
    leaves ~1.4 GB of exports in it."""
    with tempfile.TemporaryDirectory(prefix="vitserve-bench-") as tmp:
        yield Path(tmp)
