"""Triton Inference Server as a peer of ``vitserve serve``: a store version's OpenVINO IR behind PyTriton.

Runs in its own environment (``.venv-triton``, made by ``scripts/install_triton_peer.sh``), where vitserve is not
installed; it imports nothing of vitserve, as a user's Triton deployment would not::

    .venv-triton/bin/python -I benchmarks/triton_peer.py --model-dir DIR --name NAME --precision fp32 \\
        --http-port 8100 --grpc-port 8101 --metrics-port 8102 --threads 2 --workdir DIR [--info FILE]

``--model-dir`` holds what ``vitserve export --format openvino`` writes for a version: ``model.xml`` + ``.bin``,
``preprocessing.json`` (resize, crop, mean, std) and ``labels.json``. The server is the real ``tritonserver``
(2.51, as bundled in the ``nvidia-pytriton`` 0.7.0 wheel) with its Python backend: Triton's own OpenVINO and
ONNX Runtime backends are not in that wheel, so the model is a PyTriton inference function that OpenVINO runs in
the PyTriton process, behind Triton's dynamic batcher (``max_batch_size`` 8, no queue delay: a batch is what
queued while the model ran, as in our batcher). One model instance.

The model's interface is ours on /v2 (README, "Open Inference Protocol"), so that one load generator sends both
servers the same requests: input ``image`` BYTES, one JPEG file per element (shape ``[N, 1]``); output
``probabilities`` FP32 ``[N, classes]`` (Triton's classification extension turns it into top-k on request).
Per batch: Pillow decodes each JPEG in full, the shorter side is resized to ``int(img_size / crop_pct)`` with the
card's interpolation (the longer side truncated), centre-cropped with torchvision's rounding, scaled to [0, 1]
and normalised (``vit.preprocess.transform``'s arithmetic); OpenVINO runs the batch; softmax in float64.

OpenVINO is compiled as our engine compiles it (``runtime/openvino_engine.py``): ``INFERENCE_NUM_THREADS``,
one stream, ``PERFORMANCE_HINT=LATENCY`` and an explicit ``INFERENCE_PRECISION_HINT`` (f32 for fp32 and for the
NNCF int8 IR, bf16 for bf16), and warmed at batch 1, 2, 4 and 8 before the server starts. ``--info`` receives
what OpenVINO says it runs (the precision hint it took, the matmul precisions of its executable graph).

PyTriton's Python-backend stub links an older libpython whose ``_thread.RLock`` lacks ``_recursion_count``, which
Python 3.11.7's multiprocessing resource tracker calls: the environment's ``sitecustomize`` (written by the
install script) gives the tracker a ``threading._PyRLock`` in such an interpreter, before the model binds.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

logger = logging.getLogger("triton_peer")

MAX_BATCH_SIZE = 8  # the same largest batch as our server's in the benchmark
WARMUP_BATCH_SIZES = (1, 2, 4, 8)  # the sizes our engine warms (runtime.engine.EngineOptions)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8-static": "f32"}  # the int8 IR's FakeQuantize makes it int8
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL.Image.Resampling values
INPUT = "image"
OUTPUT = "probabilities"


class Preprocessing:
    """``preprocessing.json`` → ``(3, S, S)`` float32 per JPEG, the arithmetic of ``vit.preprocess.transform``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.img_size = int(spec["img_size"])
        self.resize_size = int(self.img_size / float(spec["crop_pct"]))
        self.resample = RESAMPLE[spec["interpolation"]]
        std = np.asarray(spec["std"], dtype=np.float64)
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
        self.shift = (np.asarray(spec["mean"], dtype=np.float64) / std).astype(np.float32)[:, None, None]

    def __call__(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        shorter = self.resize_size
        size = (shorter, int(shorter * height / width)) if width <= height else (int(shorter * width / height), shorter)
        resized = image.resize(size, self.resample)
        top = round((size[1] - self.img_size) / 2.0)  # torchvision's CenterCrop rounding
        left = round((size[0] - self.img_size) / 2.0)
        pixels = np.asarray(resized.crop((left, top, left + self.img_size, top + self.img_size)))
        chw = pixels.transpose(2, 0, 1).astype(np.float32, order="C")
        chw *= self.scale
        chw -= self.shift
        return chw


class OpenVinoModel:
    """The IR compiled for the CPU as our engine compiles it; ``run``: ``(B, 3, S, S)`` float32 → logits."""

    def __init__(self, xml: Path, precision: str, threads: int) -> None:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        }
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.output(0)], dtype=np.float32)

    def info(self) -> dict[str, Any]:
        """What OpenVINO says it runs: the precision hint it took and its matmuls' runtime precisions."""
        import openvino as ov

        found = set()
        for node in self.compiled.get_runtime_model().get_ops():
            rt = node.get_rt_info()
            if rt["layerType"].astype(str) in ("FullyConnected", "MatMul", "Convolution"):
                found.add(rt["runtimePrecision"].astype(str).lower())
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return {
            "inference_precision_hint": str(getattr(hint, "get_type_name", lambda: hint)()),
            "matmul_precisions": sorted(found),
            "openvino": ov.__version__,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """``(B, C)`` logits → probabilities, in float64 as our postprocessing computes them, returned float32."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x.astype(np.float32)


def infer_function(model: OpenVinoModel, preprocessing: Preprocessing) -> Any:
    """PyTriton's inference callable: a batch of requests (``@batch`` concatenates them) → probabilities."""
    from pytriton.decorators import batch

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:  # (B, 1) BYTES
        pixels = np.stack([preprocessing(bytes(item)) for item in image.reshape(-1)])
        return {OUTPUT: softmax(model.run(pixels))}

    return infer


def serve(args: argparse.Namespace) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    spec = json.loads((args.model_dir / "preprocessing.json").read_text(encoding="utf-8"))
    classes = int(spec["output"]["shape"][-1])
    model = OpenVinoModel(args.model_dir / "model.xml", args.precision, args.threads)
    for size in WARMUP_BATCH_SIZES:
        model.run(np.zeros((size, 3, int(spec["img_size"]), int(spec["img_size"])), np.float32))
    info = {**model.info(), "precision": args.precision, "threads": args.threads, "max_batch_size": MAX_BATCH_SIZE}
    logger.info("OpenVINO compiled: %s", info)
    if args.info:
        args.info.write_text(json.dumps(info) + "\n", encoding="utf-8")
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        metrics_address="127.0.0.1",
        log_verbose=0,
    )
    with Triton(config=config, workspace=args.workdir / "pytriton") as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer_function(model, Preprocessing(spec)),
            inputs=[Tensor(name=INPUT, dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(classes,))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
            strict=True,
        )
        triton.serve()  # until SIGINT (or SIGTERM, below); leaving the block stops tritonserver


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # PyTriton's serve() stops tritonserver and cleans its workspace on SIGINT only


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triton_peer.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="model.xml + .bin, preprocessing.json")
    parser.add_argument("--name", required=True, help="the model's name on /v2 (ours serves the same)")
    parser.add_argument("--precision", required=True, choices=sorted(PRECISION_HINTS))
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="OpenVINO's INFERENCE_NUM_THREADS")
    parser.add_argument("--workdir", type=Path, required=True, help="PyTriton's workspace goes below it")
    parser.add_argument("--info", type=Path, default=None, help="write what OpenVINO runs here, as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
