"""The peers: the same weights in PyTorch eager (timm) and in a plain PyTorch → ONNX export.

timm imports torchvision, whose PyPI wheel is built against the CUDA torch and dies on import beside the CPU
torch while registering fake kernels for ``torchvision::nms``/``qnms``. Defining those two operator schemas
first lets timm's pure-Python ViT import. (tests/torch_compat.py does the same for the tests; benchmarks do
not import tests.)
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from vitserve.vit.checkpoint import StateDict
from vitserve.vit.config import ViTConfig

_LIBRARY: Any = None  # keeps the operator definitions alive


def import_timm() -> ModuleType:
    global _LIBRARY
    import torch

    if _LIBRARY is None:
        try:
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIBRARY = library
        except RuntimeError:  # already defined in this process
            _LIBRARY = True
    import timm

    return timm


def to_timm_names(state: StateDict) -> dict[str, np.ndarray]:
    """Our names → timm's: only LayerNorm's ``gamma``/``beta`` differ (timm: ``weight``/``bias``)."""
    renamed = {}
    for name, value in state.items():
        if name.endswith(".gamma"):
            name = name.removesuffix(".gamma") + ".weight"
        elif name.endswith(".beta"):
            name = name.removesuffix(".beta") + ".bias"
        renamed[name] = value
    return renamed


def timm_model(config: ViTConfig, state: StateDict) -> Any:
    """timm's ``VisionTransformer`` with our ``state`` loaded (strict), in eval mode."""
    import torch

    timm = import_timm()
    from timm.models.vision_transformer import VisionTransformer

    del timm
    model = VisionTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        global_pool=config.global_pool,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        fc_norm=config.global_pool == "avg",
    )
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_timm_names(state).items()}
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def torch_onnx_export(model: Any, config: ViTConfig, path: Path) -> Path:
    """The plain export a PyTorch user would make: TorchScript exporter, opset 17, dynamic batch."""
    import torch

    x = torch.zeros(1, config.in_chans, config.img_size, config.img_size)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path
