"""Which arithmetic this CPU runs natively, as the runtimes themselves report it.

A result that depends on the CPU (bf16 logits differ from fp32 ones by ~1e-3) must be judged by what actually
ran, so callers ask here rather than guess from the request:

- ``openvino_capabilities()``: the CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (``FP32``, ``BF16``, ``INT8``...),
  which OpenVINO derives from the instructions it will use;
- ``precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))``: what a compiled model runs in. The
  property is an ``ov.Type`` that prints as ``<Type: 'bfloat16'>``, so a substring test for "bf16" fails.

Forcing the lesser path on a better CPU: ``ONEDNN_MAX_CPU_ISA=AVX2`` caps oneDNN's instruction set (PyTorch,
and this module's answer, follow it), and OpenVINO models compiled with ``INFERENCE_PRECISION_HINT=f32``
(every fp32 engine and peer here) never use bf16 whatever the CPU.
"""

from __future__ import annotations

import functools
import os

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that include native bf16 arithmetic.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX2_VNNI_2", "ALL")

_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}


def precision_name(value: object) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for an OpenVINO precision (an ``ov.Type``, or its name or repr)."""
    type_name = getattr(value, "get_type_name", None)
    text = str(type_name() if callable(type_name) else value).lower()
    for key in sorted(_NAMES, key=len, reverse=True):  # "bfloat16" before "float16"
        if key in text:
            return _NAMES[key]
    raise ValueError(f"unknown precision {value!r}; expected one of {sorted(_NAMES)}")


def isa_cap() -> str | None:
    """The oneDNN instruction-set cap from the environment, upper-cased, or None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value else None


@functools.lru_cache(maxsize=1)
def openvino_capabilities() -> frozenset[str]:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES``; empty when OpenVINO is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return frozenset()
    return frozenset(str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def native_bf16() -> bool:
    """Whether bf16 runs natively here (AVX512_BF16 or AMX), unless ``ONEDNN_MAX_CPU_ISA`` rules it out."""
    cap = isa_cap()
    if cap is not None and cap not in _BF16_ISAS:
        return False
    return "BF16" in openvino_capabilities()


def matmul_precisions(compiled: object) -> set[str]:
    """The precisions (``"f32"``, ``"bf16"``, ``"u8"``, ``"i8"``...) in which an OpenVINO compiled model's
    executable graph runs its matrix multiplications (FullyConnected, MatMul, Convolution nodes)."""
    found = set()
    for node in compiled.get_runtime_model().get_ops():  # type: ignore[attr-defined]
        info = node.get_rt_info()
        if info["layerType"].astype(str) in ("FullyConnected", "MatMul", "Convolution"):
            found.add(info["runtimePrecision"].astype(str).lower())
    return found
