"""File I/O at the edges of conversion: reading weights from ``.pth``/``.bin``, ``.safetensors`` and ``.ckpt``,
and a Hugging Face ``config.json``. torch is imported lazily, only for ``.pth``/``.bin`` (and bfloat16
safetensors), so the model library imports without it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.vit.checkpoint import load_checkpoint_file
from vitserve.vit.config import ViTConfig

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def read_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array in a checkpoint file, nested containers flattened with "." (MAE's ``{'model': sd}`` gives
    ``model.cls_token``, ...). Non-array leaves (epoch numbers, strings, lists) carry no weights and are
    skipped. ``.pth``/``.pt``/``.bin`` load with ``torch.load(weights_only=True)`` only: never arbitrary
    unpickling; ``.safetensors``; MindSpore ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".ckpt":
        return load_checkpoint_file(path)
    raise ValueError(f"unsupported weights file {path.name}: expected .pth, .pt, .bin, .safetensors or .ckpt")


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {path.name} needs torch: pip install 'vitserve[convert]'") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, unsupported globals, truncated zip
        raise ValueError(f"cannot read {path} as a weights-only torch checkpoint: {err}") from err
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out, _torch_to_numpy)
    return out


def _torch_to_numpy(value: Any) -> np.ndarray | None:
    import torch

    if not isinstance(value, torch.Tensor):
        return None
    value = value.detach().cpu()
    # numpy has no bfloat16; float32 holds every bfloat16 value exactly.
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.numpy()


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray], to_array: Any) -> None:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}{key}.", out, to_array)
        return
    array = obj if isinstance(obj, np.ndarray) else to_array(obj)
    if array is not None:
        out[prefix[:-1]] = array
    elif prefix:
        logger.debug("skipping %s: a %s, not an array", prefix[:-1], type(obj).__name__)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except TypeError:
        # bfloat16 tensors have no numpy dtype: read them through torch and widen to float32.
        import torch

        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key).to(torch.float32).numpy() for key in f.keys()}  # noqa: SIM118


# HF's ViTConfig defaults (transformers' configuration_vit.py): what a config.json omits means these.
HF_DEFAULTS: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
}


def config_from_hf(hf: Mapping[str, Any]) -> ViTConfig:
    """Our config from a Hugging Face ViT ``config.json`` (token pool, its own LayerNorm eps)."""
    merged = {**HF_DEFAULTS, **hf}
    if merged["hidden_act"] != "gelu":
        # "gelu" in HF is the exact erf form, which is what our MLP computes; others would change the numbers.
        raise ValueError(f"unsupported hidden_act {merged['hidden_act']!r} in the HF config: only 'gelu' (exact)")
    if merged.get("model_type", "vit") != "vit":
        raise ValueError(f"not a ViT config: model_type {merged['model_type']!r}")
    labels = merged.get("id2label")
    num_classes = len(labels) if labels else int(merged.get("num_labels", 2))
    return ViTConfig(
        img_size=int(merged["image_size"]),
        patch_size=int(merged["patch_size"]),
        in_chans=int(merged["num_channels"]),
        embed_dim=int(merged["hidden_size"]),
        depth=int(merged["num_hidden_layers"]),
        num_heads=int(merged["num_attention_heads"]),
        mlp_ratio=int(merged["intermediate_size"]) / int(merged["hidden_size"]),
        qkv_bias=bool(merged["qkv_bias"]),
        global_pool="token",
        num_classes=num_classes,
        layer_norm_eps=float(merged["layer_norm_eps"]),
    )


def labels_from_hf(hf: Mapping[str, Any]) -> list[str] | None:
    """Class names from ``id2label`` in index order; None when absent or HF's placeholders (LABEL_0, ...)."""
    id2label = hf.get("id2label")
    if not id2label:
        return None
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        return None
    return labels


def read_hf_config(weights_path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path] | None:
    """The ``config.json`` beside a Hugging Face weights file, if there is one."""
    path = Path(weights_path).with_name("config.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()), path
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
