"""Everything the engine benchmark can time, each built from the same store version's weights.

A runner is built lazily (one at a time, so that a ViT-B/16 benchmark holds one copy of the weights per
engine only while it is measured) and exposes ``run(batch) -> logits`` and the precision it actually runs,
asked of the runtime (``Built.precision``): a row is labelled and judged by what it computed. ``role`` says
what it is to the targets: ``ours`` (the service's engines), ``peer`` (what a user would run instead) or
``reference`` (MindSpore GRAPH_MODE, the design's engine on every device). fp32 rows are pinned to fp32 (an
OpenVINO model compiled without a hint runs bf16 on a bf16 CPU); reduced-precision rows are rows of their
own, skipped with the reason where the CPU has no native instructions for them.
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
class Built:
    run: RunFn
    precision: str  # what the runtime says it computes: "fp32", "bf16" or "int8"


@dataclass(frozen=True)
class RunnerSpec:
    engine: str  # e.g. "onnxruntime"
    dtype: str  # "fp32", "int8", "bf16"
    role: str  # "ours", "peer" or "reference"
    # Where the graph comes from: "mindspore", "mindspore-export" (+ "-nncf": statically quantised), "torch",
    # "torch-export".
    graph: str
    build: Callable[[BenchContext], Built]

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


def _mindspore(ctx: BenchContext) -> Built:
    from vitserve.runtime.engine import MindSporeEngine
    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    state, card = ctx.store.load(ctx.card.ref)
    model = create_model(card.config)
    load_state_dict(model, state)
    return Built(MindSporeEngine(model, ctx.batch_sizes, image_shape=card.input_shape).run, "fp32")


def _ours_ort(precision: str) -> Callable[[BenchContext], Built]:
    def build(ctx: BenchContext) -> Built:
        from vitserve.runtime.onnx_engine import onnxruntime_engine_for

        engine = onnxruntime_engine_for(
            ctx.store, ctx.card, batch_sizes=ctx.batch_sizes, precision=precision, threads=ctx.threads
        )
        return Built(engine.run, engine.precision)

    return build


def _ours_openvino(precision: str) -> Callable[[BenchContext], Built]:
    def build(ctx: BenchContext) -> Built:
        from vitserve.runtime.openvino_engine import openvino_engine_for

        require_precision(precision)
        engine = openvino_engine_for(
            ctx.store, ctx.card, batch_sizes=ctx.batch_sizes, precision=precision, threads=ctx.threads
        )
        _check_ran(precision, engine.precision)
        return Built(engine.run, engine.precision)

    return build


def _ours_static_int8(ctx: BenchContext) -> Built:
    """OpenVINO on the version's NNCF int8 IR, calibrated on the benchmark's photographs (random weights have
    no data of their own; a store version's accuracy is judged by ``vitserve bench --only precision``)."""
    from vitserve.benchmarks.precision_bench import photos
    from vitserve.runtime.export_cache import cached_static_int8
    from vitserve.runtime.openvino_engine import openvino_engine_for
    from vitserve.vit.preprocess import preprocess

    cached_static_int8(ctx.store, ctx.card, preprocess(photos(), ctx.card.data))
    engine = openvino_engine_for(
        ctx.store, ctx.card, batch_sizes=ctx.batch_sizes, precision="int8-static", threads=ctx.threads
    )
    _check_ran("int8", engine.precision)
    return Built(engine.run, engine.precision)


def _torch_eager(autocast_bf16: bool) -> Callable[[BenchContext], Built]:
    def build(ctx: BenchContext) -> Built:
        import torch

        require_precision("bf16" if autocast_bf16 else "fp32")
        torch.set_num_threads(ctx.threads)
        model = ctx.timm_model()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
                return model(torch.from_numpy(x)).float().numpy()

        return Built(run, "bf16" if autocast_bf16 else "fp32")

    return build


def _torch_export_path(ctx: BenchContext) -> Path:
    from vitserve.benchmarks.peers import torch_onnx_export

    path = ctx.workdir / "torch-export.onnx"
    if not path.exists():
        torch_onnx_export(ctx.timm_model(), ctx.card.config, path)
    return path


def _peer_ort(precision: str) -> Callable[[BenchContext], Built]:
    def build(ctx: BenchContext) -> Built:
        import onnxruntime as ort

        path = _torch_export_path(ctx)
        if precision == "int8":  # ONNX Runtime's documented dynamic quantisation, its defaults (s8 weights)
            from onnxruntime.quantization import quantize_dynamic

            quantised = ctx.workdir / "torch-export-int8.onnx"
            if not quantised.exists():
                quantize_dynamic(path, quantised)
            path = quantised
        options = ort.SessionOptions()  # ORT's defaults, as a user would run it, threads aside
        options.intra_op_num_threads = ctx.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return Built(lambda x: session.run(None, {"x": x})[0], precision)

    return build


def _peer_openvino(precision: str) -> Callable[[BenchContext], Built]:
    def build(ctx: BenchContext) -> Built:
        import openvino as ov

        from vitserve.runtime.cpu_precision import precision_name

        require_precision(precision)
        config = {
            "INFERENCE_NUM_THREADS": ctx.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
        }
        compiled = ov.Core().compile_model(str(_torch_export_path(ctx)), "CPU", config)
        ran = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        _check_ran(precision, ran)
        return Built(lambda x: np.asarray(compiled(x)[0]), ran)

    return build


class Unsupported(RuntimeError):
    """This runner cannot run meaningfully on this machine (the reason is reported, not raised)."""


def require_precision(precision: str) -> None:
    """Refuse a bf16 runner where the CPU would only emulate bf16 (slower than fp32, and not what it claims)."""
    from vitserve.runtime.cpu_precision import isa_cap, native_bf16

    if precision == "bf16" and not native_bf16():
        cap = isa_cap()
        raise Unsupported(
            f"no native bf16: ONEDNN_MAX_CPU_ISA={cap} rules it out"
            if cap
            else "no native bf16 on this CPU (OpenVINO's OPTIMIZATION_CAPABILITIES lack BF16)"
        )


def _check_ran(asked: str, ran: str) -> None:
    if ran != asked:
        raise Unsupported(f"asked for {asked}, the runtime reports it runs {ran}")


RUNNERS: tuple[RunnerSpec, ...] = (
    RunnerSpec("mindspore", "fp32", "reference", "mindspore", _mindspore),
    RunnerSpec("onnxruntime", "fp32", "ours", "mindspore-export", _ours_ort("fp32")),
    RunnerSpec("openvino", "fp32", "ours", "mindspore-export", _ours_openvino("fp32")),
    RunnerSpec("onnxruntime", "int8", "ours", "mindspore-export", _ours_ort("int8")),
    RunnerSpec("openvino", "bf16", "ours", "mindspore-export", _ours_openvino("bf16")),
    RunnerSpec("openvino", "int8", "ours", "mindspore-export-nncf", _ours_static_int8),
    RunnerSpec("torch", "fp32", "peer", "torch", _torch_eager(False)),
    RunnerSpec("torch", "bf16", "peer", "torch", _torch_eager(True)),
    RunnerSpec("onnxruntime", "fp32", "peer", "torch-export", _peer_ort("fp32")),
    RunnerSpec("openvino", "fp32", "peer", "torch-export", _peer_openvino("fp32")),
    RunnerSpec("onnxruntime", "int8", "peer", "torch-export", _peer_ort("int8")),
    RunnerSpec("openvino", "bf16", "peer", "torch-export", _peer_openvino("bf16")),
)


def runner_spec(label: str) -> RunnerSpec:
    """The runner called ``label`` (``RunnerSpec.label``, e.g. ``"openvino[torch-export] fp32"``)."""
    for spec in RUNNERS:
        if spec.label == label:
            return spec
    raise KeyError(f"no runner {label!r}; known: {', '.join(spec.label for spec in RUNNERS)}")


@contextlib.contextmanager
def bench_workdir() -> Iterator[Path]:
    """A scratch directory (the benchmark's store, exports, server log), removed afterwards: a ViT-B/16 run
    leaves ~1.4 GB of exports in it."""
    with tempfile.TemporaryDirectory(prefix="vitserve-bench-") as tmp:
        yield Path(tmp)
