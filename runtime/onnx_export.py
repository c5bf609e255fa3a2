"""Export a ``VisionTransformer`` to ONNX with exact GELU and a symbolic batch axis.

MindSpore's ONNX exporter (2.10) has no mapping for ``Erf``, so a model with exact GELU does not export, and
it only writes static shapes. We therefore export a twin of the model whose MLPs use the tanh GELU (which the
exporter writes as Pow/Mul/Add/Tanh/Add/Mul/Mul), then rewrite the ONNX graph:

- every tanh-GELU subgraph becomes the exact form ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (opset 9 ``Erf``; ONNX
  Runtime and OpenVINO both fuse this pattern into their GELU kernels), so the exported numerics are the
  model's own, not an approximation;
- each LayerNorm's variance, written as ``ReduceSumSquare(x - mean) / n``, becomes ``ReduceMean((x - mean)^2)``,
  the form ONNX Runtime's and OpenVINO's LayerNorm fusions recognise (one MVN kernel instead of eight ops);
- each ``Dense``, written as ``Reshape(x, [-1, k]) → Gemm → Reshape``, becomes a MatMul + Add on the
  ``(batch, tokens, k)`` tensor, as PyTorch writes ``nn.Linear``: with no flattening Reshape in front of it, the
  int8 IR's activation quantiser fuses into the LayerNorm or GELU before the MatMul (measured on ViT-B/16 with
  VNNI: static int8 13.1 → 16.7 images/s at batch 8);
- the batch dimension baked into Reshape/Expand shape constants is replaced by a symbolic one, so one file
  serves every batch size.

``onnx`` is imported lazily: the model library stays importable on targets (Ascend) without it.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mindspore as ms
import numpy as np
from mindspore import nn

from vitserve.vit.checkpoint import StateDict, load_state_dict
from vitserve.vit.config import ViTConfig
from vitserve.vit.files import write_bytes_atomic
from vitserve.vit.model import VisionTransformer

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

# The batch size the static graph is traced with. A value no other leading dimension of a ViT shape
# constant takes (those are 1, -1, 3 or token/feature counts), so a leading 5 can only be the batch.
TRACE_BATCH = 5
BATCH_DIM = "batch"


class ExportError(RuntimeError):
    """The exported graph did not have the structure the rewrite expects (a new MindSpore exporter?)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    gelu_rewritten: int  # tanh-GELU subgraphs replaced by the exact erf form (one per block)
    dynamic_batch: bool


def export_onnx(config: ViTConfig, state: StateDict, path: str | Path, *, dynamic_batch: bool = True) -> ExportResult:
    """Write ``state`` (weights of a ``config`` model) as an ONNX graph to ``path``, atomically.

    The graph takes ``x`` of shape ``(batch, in_chans, img_size, img_size)`` float32 and returns
    ``(batch, num_classes)`` float32 logits; ``batch`` is symbolic unless ``dynamic_batch`` is false (then it
    is fixed to ``TRACE_BATCH``). Reduced compute dtypes are exported as float32 (the CPU engines' reference).
    """
    import onnx

    path = Path(path)
    model = _tanh_gelu_twin(config.replace(compute_dtype="float32"), state)
    x = ms.Tensor(np.zeros((TRACE_BATCH, config.in_chans, config.img_size, config.img_size), np.float32))
    with tempfile.TemporaryDirectory(prefix="vit-export-") as tmp:
        stem = os.path.join(tmp, "model")
        ms.export(model, x, file_name=stem, file_format="ONNX")  # appends ".onnx"
        graph_model = onnx.load(stem + ".onnx")
    rewritten = rewrite_tanh_gelu_to_erf(graph_model)
    if rewritten != config.depth:
        raise ExportError(f"expected {config.depth} GELU subgraphs (one per block), rewrote {rewritten}")
    norms = rewrite_layer_norm_variance(graph_model)
    if norms < 2 * config.depth:
        raise ExportError(f"expected at least {2 * config.depth} LayerNorms (two per block), rewrote {norms}")
    dense = rewrite_dense_to_matmul(graph_model)
    if dynamic_batch:
        make_batch_symbolic(graph_model, TRACE_BATCH)
    onnx.checker.check_model(graph_model)
    write_bytes_atomic(path, graph_model.SerializeToString())
    logger.info(
        "exported %s (rewritten: %d GELU, %d LayerNorm, %d Dense; dynamic batch %s)",
        path,
        rewritten,
        norms,
        dense,
        dynamic_batch,
    )
    return ExportResult(path=path, gelu_rewritten=rewritten, dynamic_batch=dynamic_batch)


def _tanh_gelu_twin(config: ViTConfig, state: StateDict) -> VisionTransformer:
    """The model with ``state`` loaded and tanh GELU in its MLPs: the one form MindSpore can export."""
    model = VisionTransformer(config)
    load_state_dict(model, state)
    for block in model.blocks:
        block.mlp.act = nn.GELU(approximate=True)
    model.set_train(False)
    return model


# --- graph rewrites -------------------------------------------------------------------------------------


class _Graph:
    """Producer/consumer indexes and constant values over an ``onnx.GraphProto``."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def only_producer(self, name: str, op_type: str) -> Any:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            raise _NoMatch(f"{name!r} is not produced by {op_type}")
        return node


class _NoMatch(Exception):
    pass


def _scalar_input(g: _Graph, node: Any) -> tuple[str, float]:
    """(the non-constant input, the constant scalar) of a binary node with one scalar constant input."""
    a, b = node.input
    for var, const in ((a, b), (b, a)):
        value = g.const(const)
        if value is not None and value.size == 1:
            return var, float(value.reshape(()))
    raise _NoMatch(f"{node.name} has no scalar constant input")


def _match_tanh_gelu(g: _Graph, tanh: Any) -> tuple[str, list[Any], Any]:
    """Match ``x * (0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))))`` around ``tanh``.

    Returns (x, the matched nodes, the final Mul whose output is the GELU's output).
    """
    scale = g.only_producer(tanh.input[0], "Mul")
    inner, k = _scalar_input(g, scale)
    if not math.isclose(k, math.sqrt(2 / math.pi), rel_tol=1e-5):
        raise _NoMatch("tanh argument scale is not sqrt(2/pi)")
    add_x = g.only_producer(inner, "Add")
    cubic_mul = next(
        (g.producer.get(i) for i in add_x.input if getattr(g.producer.get(i), "op_type", "") == "Mul"), None
    )
    if cubic_mul is None:
        raise _NoMatch("no cubic term")
    cube, c = _scalar_input(g, cubic_mul)
    pow_node = g.only_producer(cube, "Pow")
    x = pow_node.input[0]
    exponent = g.const(pow_node.input[1])
    if exponent is None or float(exponent.reshape(())) != 3.0 or not math.isclose(c, 0.044715, rel_tol=1e-5):
        raise _NoMatch("cubic term is not 0.044715 * x**3")
    if set(add_x.input) != {x, cubic_mul.output[0]}:
        raise _NoMatch("inner Add does not add x")
    (add_one,) = g.consumers[tanh.output[0]]
    (half,) = g.consumers[add_one.output[0]]
    (final,) = g.consumers[half.output[0]]
    if _scalar_input(g, add_one)[1] != 1.0 or _scalar_input(g, half)[1] != 0.5:
        raise _NoMatch("outer terms are not 0.5 * (1 + tanh)")
    if final.op_type != "Mul" or set(final.input) != {x, half.output[0]}:
        raise _NoMatch("the output Mul does not multiply by x")
    return x, [pow_node, cubic_mul, add_x, scale, tanh, add_one, half, final], final


def rewrite_tanh_gelu_to_erf(graph_model: onnx.ModelProto) -> int:
    """Replace each tanh-GELU subgraph by exact GELU in its Erf form, in place; returns how many."""
    from onnx import helper, numpy_helper

    graph = graph_model.graph
    g = _Graph(graph)
    replaced = 0
    for tanh in [n for n in graph.node if n.op_type == "Tanh"]:
        try:
            x, matched, final = _match_tanh_gelu(g, tanh)
        except (_NoMatch, ValueError) as err:
            logger.debug("Tanh %s is not a GELU: %s", tanh.name, err)
            continue
        p = f"gelu_erf_{replaced}"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), f"{p}_sqrt2"),
                numpy_helper.from_array(np.array(1.0, np.float32), f"{p}_one"),
                numpy_helper.from_array(np.array(0.5, np.float32), f"{p}_half"),
            ]
        )
        # The order ORT's GeluFusion and OpenVINO's GeluFusionWithErf recognise: Div, Erf, Add, Mul(x), Mul(0.5).
        new_nodes = [
            helper.make_node("Div", [x, f"{p}_sqrt2"], [f"{p}_div"], name=f"{p}/Div"),
            helper.make_node("Erf", [f"{p}_div"], [f"{p}_erf"], name=f"{p}/Erf"),
            helper.make_node("Add", [f"{p}_erf", f"{p}_one"], [f"{p}_add"], name=f"{p}/Add"),
            helper.make_node("Mul", [x, f"{p}_add"], [f"{p}_mul"], name=f"{p}/Mul"),
            helper.make_node("Mul", [f"{p}_mul", f"{p}_half"], [final.output[0]], name=f"{p}/Half"),
        ]
        position = list(graph.node).index(final)
        for node in matched:
            graph.node.remove(node)
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position - len(matched) + 1 + offset, node)
        replaced += 1
        g = _Graph(graph)
    _drop_unused_initializers(graph_model)
    return replaced


def rewrite_layer_norm_variance(graph_model: onnx.ModelProto) -> int:
    """Replace each ``ReduceSumSquare(c) / n`` (n the count it reduces over) by ``ReduceMean(Pow(c, 2))``, in
    place; returns how many. Run on the traced (static-shaped) graph: ``n`` is checked against ``c``'s shape."""
    from onnx import helper, numpy_helper, shape_inference

    graph = graph_model.graph
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in shape_inference.infer_shapes(graph_model).graph.value_info
    }
    g = _Graph(graph)
    two = "layer_norm_two"
    replaced = 0
    for square in [n for n in graph.node if n.op_type == "ReduceSumSquare"]:
        consumers = g.consumers.get(square.output[0], [])
        if len(consumers) != 1 or consumers[0].op_type != "Div" or consumers[0].input[0] != square.output[0]:
            continue
        divide = consumers[0]
        count, shape = g.const(divide.input[1]), shapes.get(square.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in square.attribute}
        axes = attrs.get("axes", list(range(len(shape or []))))
        if (
            count is None
            or count.size != 1
            or not shape
            or float(count.reshape(())) != float(np.prod([shape[a] for a in axes]))
        ):
            raise ExportError(f"{divide.name}: not a mean of squares over {square.input[0]} {shape}")
        position = list(graph.node).index(square)
        squared = f"{square.name}/squared"
        new_nodes = [
            helper.make_node("Pow", [square.input[0], two], [squared], name=f"{square.name}/Pow"),
            helper.make_node("ReduceMean", [squared], [divide.output[0]], name=f"{square.name}/ReduceMean", **attrs),
        ]
        for node in (square, divide):
            graph.node.remove(node)
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position + offset, node)
        replaced += 1
    if replaced:
        graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), two))
    _drop_unused_initializers(graph_model)
    return replaced


def rewrite_dense_to_matmul(graph_model: onnx.ModelProto) -> int:
    """Replace each ``Reshape(x, [-1, k]) → Gemm(w, b)`` by ``Reshape(x, [0, -1, k]) → MatMul(wᵀ) → Add(b)``, in
    place (the Reshape after it, back to the token layout, stays); returns how many. Gemms on other inputs (the
    classifier head, on pooled features) are left as they are."""
    from onnx import numpy_helper

    from vitserve.runtime.quantize import gemm_to_matmul, matmul_weight

    graph = graph_model.graph
    g = _Graph(graph)
    initializers = {init.name for init in graph.initializer}  # the weights gemm_to_matmul rewrites
    dense = []
    for gemm in [n for n in graph.node if n.op_type == "Gemm" and n.input[1] in initializers]:
        flat = gemm.input[0]
        flatten, weight = g.producer.get(flat), g.const(gemm.input[1])
        if flatten is None or flatten.op_type != "Reshape" or len(g.consumers[flat]) != 1 or weight is None:
            continue
        w = matmul_weight(gemm, weight)  # (k, n), or None: not a form MatMul + Add computes
        target = g.const(flatten.input[1])
        if w is None or target is None or target.tolist() != [-1, w.shape[0]]:
            continue
        shape = f"{gemm.name or gemm.output[0]}/tokens_shape"
        graph.initializer.append(numpy_helper.from_array(np.array([0, -1, w.shape[0]], np.int64), shape))
        flatten.input[1] = shape  # (batch, tokens, k): 0 copies the batch, -1 keeps the tokens
        dense.append(gemm.output[0])
    gemm_to_matmul(graph_model, only=set(dense))
    _drop_unused_initializers(graph_model)
    return len(dense)


def make_batch_symbolic(graph_model: onnx.ModelProto, trace_batch: int) -> None:
    """Turn the traced batch size into a symbolic ``batch`` axis, in place.

    The exporter bakes the batch into Reshape targets (``[B, N, D]``) and the cls token's Expand shape
    (``[B, 1, D]``). A Reshape's leading B becomes -1 (or 0, "copy the input's dim 0", when the target
    already holds a -1); the Expand shape is rebuilt from ``Shape(x)[0:1]`` at run time.
    """
    from onnx import helper, numpy_helper, shape_inference

    graph = graph_model.graph
    inferred = shape_inference.infer_shapes(graph_model).graph
    leading = {
        vi.name: vi.type.tensor_type.shape.dim[0].dim_value
        for vi in [*inferred.value_info, *inferred.input]
        if vi.type.tensor_type.shape.dim
    }
    g = _Graph(graph)
    batch_of_x = "batch_of_x"
    needs_batch_of_x = False
    for node in list(graph.node):
        if node.op_type not in ("Reshape", "Expand"):
            continue
        target = g.const(node.input[1])
        if target is None or target.ndim != 1 or target.size == 0 or int(target[0]) != trace_batch:
            continue
        rest = target[1:].astype(np.int64)
        if node.op_type == "Reshape":
            if -1 in rest and leading.get(node.input[0]) != trace_batch:
                raise ExportError(f"cannot make Reshape {node.name} batch-symbolic: input dim 0 is not the batch")
            fixed = np.concatenate([[0 if -1 in rest else -1], rest]).astype(np.int64)
            name = f"{node.name or node.output[0]}/batch_symbolic_shape"
            graph.initializer.append(numpy_helper.from_array(fixed, name))
        else:
            name = f"{node.name or node.output[0]}/batch_symbolic_shape"
            graph.initializer.append(numpy_helper.from_array(rest, f"{name}_rest"))
            graph.node.insert(
                list(graph.node).index(node),
                helper.make_node("Concat", [batch_of_x, f"{name}_rest"], [name], axis=0, name=f"{name}/Concat"),
            )
            needs_batch_of_x = True
        node.input[1] = name
    if needs_batch_of_x:
        for const, value in ((f"{batch_of_x}_start", 0), (f"{batch_of_x}_end", 1)):
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), const))
        graph.node.insert(0, helper.make_node("Shape", [graph.input[0].name], ["shape_of_x"], name="shape_of_x"))
        graph.node.insert(
            1,
            helper.make_node(
                "Slice", ["shape_of_x", f"{batch_of_x}_start", f"{batch_of_x}_end"], [batch_of_x], name=batch_of_x
            ),
        )
    for value_info in [*graph.input, *graph.output]:
        value_info.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # static intermediate shapes would contradict the symbolic batch
    _drop_unused_initializers(graph_model)


def _drop_unused_initializers(graph_model: onnx.ModelProto) -> None:
    """Remove initializers and Constant nodes nothing reads any more (left behind by the rewrites)."""
    graph = graph_model.graph
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
