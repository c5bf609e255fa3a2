"""What the runtimes say about this CPU's arithmetic, and the environment cap that forces the lesser path."""

from __future__ import annotations

import openvino as ov
import pytest

from vitserve.runtime import cpu_precision
from vitserve.runtime.cpu_precision import native_bf16, precision_name


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (ov.Type.bf16, "bf16"),
        (ov.Type.f32, "fp32"),
        (ov.Type.f16, "fp16"),
        ("<Type: 'bfloat16'>", "bf16"),
        ("f32", "fp32"),
    ],
)
def test_precision_names_come_from_openvino_types_not_their_repr(value: object, name: str) -> None:
    assert precision_name(value) == name


def test_an_unknown_precision_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'i4'"):
        precision_name("i4")


def test_native_bf16_follows_openvino_capabilities_and_the_isa_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    capabilities = cpu_precision.openvino_capabilities()
    assert "FP32" in capabilities  # OpenVINO answered for this CPU
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert native_bf16() == ("BF16" in capabilities)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not native_bf16()  # the lesser path, forced on any CPU
    monkeypatch.setattr(cpu_precision, "openvino_capabilities", lambda: frozenset({"FP32", "BF16", "INT8"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert native_bf16()
