"""Importing timm and transformers beside our CPU torch in tests.

PyPI's torchvision is built against the CUDA torch: beside the CPU torch 2.13.0 its import dies while
registering fake kernels for ``torchvision::nms``/``qnms``, which do not exist without its C++ library.
timm and transformers both import torchvision. Defining the two operator schemas with ``torch.library``
first lets the import finish; nothing we use calls those operators.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

_LIBRARY: Any = None  # keeps the definitions alive; torch drops them when the Library is collected


def define_torchvision_ops() -> None:
    """Define ``torchvision::nms`` and ``torchvision::qnms`` once per process (idempotent)."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    import torch

    try:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already defined in this process (e.g. by a working torchvision): nothing to do
        return
    _LIBRARY = library


def import_timm() -> ModuleType:
    """``import timm`` after defining the torchvision operator schemas."""
    define_torchvision_ops()
    import timm

    return timm


def import_transformers() -> ModuleType:
    """``import transformers`` after defining the torchvision operator schemas."""
    define_torchvision_ops()
    import transformers

    return transformers
