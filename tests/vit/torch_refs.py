"""PyTorch reference models (timm, Hugging Face) with random weights, saved in each source format.

Every parameter gets random values (LayerNorm scales around 1, biases and embeddings non-zero, matrices
scaled by 1/sqrt(fan_in)) so that a swapped, untransposed or dropped weight changes the logits by O(1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.torch_compat import import_timm, import_transformers
from vitserve.vit.config import ViTConfig


def randomize_(model: Any, seed: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1 and "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif param.ndim == 1:
                param.copy_(0.2 * noise)
            elif name.endswith(("cls_token", "pos_embed", "position_embeddings")):
                param.copy_(0.5 * noise)
            else:
                param.copy_(noise / np.sqrt(np.prod(param.shape[1:])))
    return model.eval()


def timm_vit(config: ViTConfig, seed: int = 0) -> Any:
    """timm's VisionTransformer with ``config``'s dimensions and random weights (eval mode)."""
    timm = import_timm()
    model = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        num_classes=config.num_classes,
        global_pool=config.global_pool,
    )
    return randomize_(model, seed)


def hf_vit(config: ViTConfig, seed: int = 0) -> Any:
    """HF ViTForImageClassification with ``config``'s dimensions (token pool) and random weights."""
    import_transformers()
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    hf_config = HFConfig(
        hidden_size=config.embed_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_hidden_dim,
        image_size=config.img_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        num_labels=config.num_classes,  # type: ignore[call-arg]  # a PretrainedConfig keyword
    )
    return randomize_(ViTForImageClassification(hf_config), seed)


def logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out.logits if hasattr(out, "logits") else out).numpy()


def save_timm_pth(model: Any, path: Path) -> Path:
    import torch

    torch.save(model.state_dict(), path)
    return path


def save_mae_pth(model: Any, path: Path) -> Path:
    """MAE's layout: the state dict under 'model' (as main_finetune.py saves it)."""
    import torch

    torch.save({"model": model.state_dict()}, path)
    return path


def save_safetensors(model: Any, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def save_hf(model: Any, directory: Path, **config_changes: Any) -> Path:
    """save_pretrained: model.safetensors + config.json. Returns the weights file."""
    model.save_pretrained(directory)
    if config_changes:
        path = directory / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config_changes}))
    return directory / "model.safetensors"
