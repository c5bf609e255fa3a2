"""Reduced precision for the CPU engines: int8 dynamic quantisation of an ONNX export.

Dynamic quantisation stores the weight matmuls' weights as 8-bit integers (per output channel) and quantises
activations to uint8 per batch at run time, so it needs no calibration data. LayerNorm, softmax, GELU and
the two activation × activation matmuls of attention stay fp32: ONNX Runtime's dynamic quantiser would also
quantise those (it treats any MatMul's second input as a weight), which we measured to destroy accuracy
(21 % top-1 agreement on a digits classifier). Accuracy is measured, not assumed: see
``tests/runtime/test_onnx_engine.py`` and ``benchmarks.precision_check``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitserve.vit.files import atomic_path

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)


def quantize_int8(src: Path, dst: Path) -> None:
    """Write the int8 dynamically quantised form of the ONNX model ``src`` to ``dst``, atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph_model = onnx.load(str(src))
    weight_matmuls = gemm_to_matmul(graph_model)
    with (
        atomic_path(dst, suffix=".onnx") as out,
        tempfile.TemporaryDirectory(prefix=".quantize-", dir=dst.parent) as tmp,
    ):
        staged = Path(tmp) / "matmul.onnx"
        onnx.save(graph_model, str(staged))
        # uint8 weights: on CPUs without VNNI, ORT's u8×s8 kernels can saturate their 16-bit intermediate sums
        # (vpmaddubsw); u8×u8 is exact there and as fast. Per-channel scales follow each output feature's range.
        quantize_dynamic(
            staged,
            out,
            weight_type=QuantType.QUInt8,
            per_channel=True,
            nodes_to_quantize=weight_matmuls,
        )
        os.chmod(out, 0o644)
    logger.info("quantised %s → %s (int8 dynamic, %d weight matmuls)", src, dst, len(weight_matmuls))


def gemm_to_matmul(graph_model: onnx.ModelProto, only: Collection[str] | None = None) -> list[str]:
    """Rewrite each ``Gemm(x, W, b, transB=1)`` with constant ``W`` as ``MatMul(x, Wᵀ) + b``, in place; with
    ``only``, just the Gemms whose output is named there.

    ORT's dynamic quantiser handles MatMul but not Gemm. Returns the names of every MatMul whose second input
    is a constant (the weight matmuls: the only ones to quantise).
    """
    from onnx import helper, numpy_helper

    graph = graph_model.graph
    weights = {init.name: init for init in graph.initializer}
    for node in list(graph.node):
        if node.op_type != "Gemm" or node.input[1] not in weights or (only is not None and node.output[0] not in only):
            continue
        weight = matmul_weight(node, numpy_helper.to_array(weights[node.input[1]]))
        if weight is None:
            continue
        name = node.name or node.output[0]
        graph.initializer.append(numpy_helper.from_array(weight, f"{node.input[1]}/matmul"))
        product = f"{name}/matmul_out" if len(node.input) > 2 else node.output[0]
        replacement = [
            helper.make_node("MatMul", [node.input[0], f"{node.input[1]}/matmul"], [product], name=f"{name}/MatMul")
        ]
        if len(node.input) > 2:
            replacement.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}/Add"))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    constants = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]


def matmul_weight(gemm: Any, weight: np.ndarray) -> np.ndarray | None:
    """``weight`` as the ``(k, n)`` second input of a MatMul computing the Gemm node ``gemm`` (``Wᵀ`` under
    ``transB``), or None when the Gemm is not a plain ``x·W + b`` (``transA``, ``alpha`` or ``beta`` set)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    return np.ascontiguousarray(weight.T) if attrs.get("transB", 0) else weight
