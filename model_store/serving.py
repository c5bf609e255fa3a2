"""Serving options a version opts into (``Card.serving``), and the values the store accepts for them.

``precision``: ``"fp32"`` (the default when unset), ``"int8"`` (ONNX Runtime's dynamically quantised export),
``"int8-static"`` (OpenVINO on an NNCF statically quantised IR, calibrated on real images) or ``"bf16"``
(OpenVINO bf16 where the CPU has native bf16, f32 elsewhere). Opt in after measuring: ``vitserve bench --only
precision --precision P`` records ``"<dataset>@P"`` metrics. The CPU engines read it when the service's
``engine_precision`` is ``auto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

# The one list of precisions a version may be served in; settings, the CLI and the benchmarks take theirs from here.
Precision = Literal["fp32", "int8", "int8-static", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
REDUCED_PRECISIONS: tuple[Precision, ...] = tuple(p for p in PRECISIONS if p != "fp32")

SERVING_OPTIONS: dict[str, tuple[str, ...]] = {"precision": PRECISIONS}


def check_serving(ref: str, options: Mapping[str, object]) -> dict[str, str]:
    """``options`` as stored, or a ``ValueError`` naming ``ref``, the bad option and what is accepted."""
    if not options:
        raise ValueError(f"{ref}: no serving option given; known: {', '.join(SERVING_OPTIONS)}")
    for key, value in options.items():
        allowed = SERVING_OPTIONS.get(key)
        if allowed is None:
            raise ValueError(f"{ref}: unknown serving option {key!r}; known: {', '.join(SERVING_OPTIONS)}")
        if value not in allowed:
            raise ValueError(f"{ref}: serving {key} {value!r} is not supported; choose one of: {', '.join(allowed)}")
    return {key: str(value) for key, value in options.items()}
