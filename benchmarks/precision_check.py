"""Measure what a reduced-precision engine costs in accuracy, on real images, and record it in the card.

Two numbers: top-1 agreement with the fp32 engine on any images (labels not needed), and, where labels are
given, the change in top-1 accuracy. They are recorded in the version's card under the dataset name
``"<dataset>@<precision>"``. Precisions: ``int8`` (ONNX Runtime, dynamic), ``int8-static`` (OpenVINO on the
version's NNCF IR, which must have been made first) and ``bf16`` (OpenVINO; refused where the CPU would run
it in f32, since agreement measured there would say nothing about bf16).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore
from vitserve.runtime.engine import Engine
from vitserve.runtime.onnx_engine import onnxruntime_engine_for
from vitserve.vit.preprocess import ImageSource, preprocess

logger = logging.getLogger(__name__)


def compare_logits(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Agreement metrics between two ``(N, C)`` logit arrays (and accuracies when ``labels`` ``(N,)`` is given)."""
    ref_top1, cand_top1 = reference.argmax(axis=1), candidate.argmax(axis=1)
    metrics = {
        "images": float(len(reference)),
        "top1_agreement": float(np.mean(ref_top1 == cand_top1)),
        "max_abs_logit_diff": float(np.max(np.abs(reference - candidate))),
    }
    if labels is not None:
        metrics["top1_fp32"] = float(np.mean(ref_top1 == labels))
        metrics["top1_reduced"] = float(np.mean(cand_top1 == labels))
        metrics["top1_delta"] = metrics["top1_reduced"] - metrics["top1_fp32"]
    return metrics


class PrecisionUnavailable(RuntimeError):
    """This CPU would not run the asked precision (it would silently run another): nothing is measured."""


def reduced_engine(store: ModelStore, card: Card, precision: str, batch_size: int, threads: int | None) -> Engine:
    """The engine serving ``precision``, checked to run it (``PrecisionUnavailable`` otherwise)."""
    if precision == "int8":
        return onnxruntime_engine_for(store, card, batch_sizes=(batch_size,), precision="int8", threads=threads)
    from vitserve.runtime.openvino_engine import openvino_engine_for

    engine = openvino_engine_for(store, card, batch_sizes=(batch_size,), precision=precision, threads=threads)
    expected = "int8" if precision == "int8-static" else precision
    if engine.precision != expected:
        raise PrecisionUnavailable(
            f"{precision} runs as {engine.precision} on this CPU: measure it on one with {precision}"
        )
    return engine


def run_batched(engine: Engine, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([engine.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def measure_precision(
    store: ModelStore,
    card: Card,
    images: Sequence[ImageSource],
    *,
    dataset: str,
    labels: np.ndarray | None = None,
    precision: str = "int8",
    batch_size: int = 32,
    threads: int | None = None,
    record: bool = True,
) -> dict[str, float]:
    """Run ``images`` through the fp32 and the ``precision`` engine of ``card``'s version; return (and record
    under ``"<dataset>@<precision>"`` in the card) the metrics of ``compare_logits``.
    """
    x = preprocess(images, card.data)
    sizes = (batch_size,)
    fp32 = onnxruntime_engine_for(store, card, batch_sizes=sizes, threads=threads)
    reduced = reduced_engine(store, card, precision, batch_size, threads)
    metrics = compare_logits(run_batched(fp32, x, batch_size), run_batched(reduced, x, batch_size), labels)
    if record:
        store.record_metrics(card.ref, f"{dataset}@{precision}", metrics)
    logger.info("%s %s on %s: %s", card.ref, precision, dataset, metrics)
    return metrics
