"""How much arithmetic a ViT costs, and how fast this machine can do arithmetic at all (the GEMM ceiling).

The ceiling is measured, not looked up: single-precision GEMMs of the model's own largest shape
(tokens × embed_dim @ embed_dim × mlp_hidden) through the BLAS libraries at hand, best of several runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from vitserve.vit.config import ViTConfig


def vit_macs(config: ViTConfig) -> int:
    """Multiply-accumulates of one forward pass for one image (convolution, matmuls and attention)."""
    n, d, h = config.num_patches + 1, config.embed_dim, config.mlp_hidden_dim
    patch = config.num_patches * d * config.in_chans * config.patch_size**2
    per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * h  # qkv, q·kᵀ and a·v, proj, mlp
    return patch + config.depth * per_block + d * config.num_classes


def _best_seconds(fn: Callable[[], object], repeats: int, min_time_s: float) -> float:
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > min_time_s and best < float("inf"):
            break
    return best


def gemm_gflops(config: ViTConfig, *, threads: int, batch: int = 8, repeats: int = 5) -> dict[str, float]:
    """Measured fp32 GFLOP/s of the model's MLP GEMM at ``batch`` images through numpy's BLAS and torch."""
    rows, d, h = batch * (config.num_patches + 1), config.embed_dim, config.mlp_hidden_dim
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((rows, d), np.float32), rng.standard_normal((d, h), np.float32)
    flops = 2.0 * rows * d * h
    results = {"numpy": flops / _best_seconds(lambda: a @ b, repeats, 2.0) / 1e9}
    try:
        import torch
    except ImportError:
        return results
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        results["torch"] = flops / _best_seconds(lambda: ta @ tb, repeats, 2.0) / 1e9
    finally:
        torch.set_num_threads(previous)
    return results


def int8_gemm_gops(config: ViTConfig, *, threads: int, batch: int = 8, repeats: int = 5) -> float:
    """Measured int8 GOP/s of the same GEMM through ONNX Runtime's ``MatMulInteger`` (the int8 engine's kernel)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rows, d, h = batch * (config.num_patches + 1), config.embed_dim, config.mlp_hidden_dim
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [rows, d]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [d, h]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [rows, h])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (rows, d), dtype=np.uint8), "b": rng.integers(-127, 127, (d, h), dtype=np.int8)}
    return 2.0 * rows * d * h / _best_seconds(lambda: session.run(None, feeds), repeats, 2.0) / 1e9


_OV_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 comes from the graph's FakeQuantize, not a hint


def openvino_gemm_gops(config: ViTConfig, *, threads: int, precision: str, batch: int = 8, repeats: int = 5) -> float:
    """Measured GFLOP/s (GOP/s for int8) of the model's MLP GEMM as a one-MatMul OpenVINO model.

    OpenVINO's CPU plugin runs it on its oneDNN kernels: the fastest GEMM at hand for each dtype (AMX/AVX512_BF16
    for bf16, VNNI for int8 where the CPU has them). int8 is the form OpenVINO's own quantised models take:
    FakeQuantize on both inputs, which the plugin fuses into an integer MatMul. Raises ``RuntimeError`` when
    the compiled model does not run the asked precision (bf16 on a CPU without it).
    """
    import openvino as ov
    import openvino.opset13 as ops

    from vitserve.runtime.cpu_precision import matmul_precisions, native_bf16

    if precision == "bf16" and not native_bf16():
        raise RuntimeError("no native bf16 on this CPU")
    rows, d, h = batch * (config.num_patches + 1), config.embed_dim, config.mlp_hidden_dim
    rng = np.random.default_rng(0)
    a = ops.parameter([rows, d], ov.Type.f32, name="a")
    weights = (rng.standard_normal((d, h)) * 0.02).astype(np.float32)
    left: object = a
    right: object = ops.constant(weights)
    if precision == "int8":
        scale = float(np.abs(weights).max())
        left = ops.fake_quantize(a, -4.0, 4.0, -4.0, 4.0, 256)
        right = ops.fake_quantize(right, -scale, scale, -scale, scale, 255)
    model = ov.Model([ops.matmul(left, right, False, False)], [a], "gemm")
    config_ov = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": _OV_HINTS[precision],
    }
    compiled = ov.Core().compile_model(model, "CPU", config_ov)
    ran = matmul_precisions(compiled)
    wanted = {"fp32": {"f32"}, "bf16": {"bf16"}, "int8": {"u8", "i8"}}[precision]
    if not ran & wanted:
        raise RuntimeError(f"OpenVINO ran the {precision} GEMM as {sorted(ran)}")
    request = compiled.create_infer_request()
    x = rng.standard_normal((rows, d)).astype(np.float32)
    return 2.0 * rows * d * h / _best_seconds(lambda: request.infer({0: x}), repeats, 2.0) / 1e9
