"""Weight conversion: MAE, timm, Hugging Face and MindFormers checkpoints → our state dict, config and
preprocessing settings (and ours → MindFormers' layout).

The functions over ``dict[str, ndarray]`` are pure and driven by the tables in ``vit.convert_tables``; file
I/O is in ``vit.convert_io`` and only ``convert_file`` touches it. A missing, unexpected or mis-shaped key is
a ``CheckpointMismatch`` naming it, never a silent partial load. The only keys dropped are training state
that holds no model weights (optimizer moments, step counters, loss scale), each logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from vitserve.vit.checkpoint import CheckpointMismatch, StateDict, adapt_pos_embed, check_state_dict
from vitserve.vit.config import INCEPTION_DATA, DataConfig, ViTConfig
from vitserve.vit.convert_io import config_from_hf, labels_from_hf, read_hf_config, read_weights
from vitserve.vit.convert_tables import MINDFORMERS_RULES, RULES, rename_to_ours, rename_to_theirs
from vitserve.vit.files import sha256_file

__all__ = [
    "FORMATS",
    "KNOWN_NUM_HEADS",
    "ConvertedModel",
    "Format",
    "convert_file",
    "default_data_config",
    "detect_format",
    "from_vitserve_to_mindformers",
    "infer_config",
    "read_weights",
    "to_vitserve",
]

logger = logging.getLogger(__name__)

Format = Literal["timm", "mae", "hf", "mindformers", "vitserve"]
FORMATS: tuple[str, ...] = get_args(Format)

# num_heads is not in any weight's shape. The standard ViT widths and their head counts (tiny, small,
# base, large, huge); any other width needs an explicit config.
KNOWN_NUM_HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

# Training state that rides along in checkpoints but holds no model weights; dropped (and logged).
_TRAINING_STATE = re.compile(
    r"^(optimizer|scaler|lr_scheduler|model_ema|state_dict_ema|adam_m|adam_v|moments|accu_grads)\.|"
    r"^(global_step|learning_rate|beta1_power|beta2_power|epoch_num|step_num|loss_scale|scale_sense|"
    r"current_iterator_step|last_overflow_iterator_step|epoch)$"
)
# MAE's pre-training checkpoints (models_mae) carry the masked-autoencoder decoder and no classifier.
_MAE_PRETRAIN = re.compile(r"^(mask_token|decoder_)")


@dataclass(frozen=True)
class ConvertedModel:
    """A converted checkpoint: our state dict plus everything needed to rebuild and feed the model."""

    state: StateDict
    config: ViTConfig
    data: DataConfig
    source: dict[str, Any]  # lineage: path, format, sha256 of the source file (and its config.json for HF)
    labels: list[str] | None = field(default=None)  # class names when the source carries real ones (HF)


def detect_format(raw: dict[str, np.ndarray]) -> Format:
    """Which layout a flat ``read_weights`` dict is in, from its key names."""
    keys = {k.removeprefix("module.") for k in raw}  # DistributedDataParallel's wrapper
    if "model.patch_embed.proj.weight" in keys or "model.cls_token" in keys:
        return "mae"  # MAE saves {'model': state_dict}
    if any(k.startswith("vit.embeddings.") for k in keys):
        return "hf"
    if "vit.cls_tokens" in keys or "vit.patch_embed.proj.weight" in keys:
        return "mindformers"
    inner = {k.removeprefix("state_dict.") for k in keys}  # timm's training checkpoints
    if "patch_embed.proj.weight" in inner:
        # Ours names LayerNorm parameters gamma/beta; timm weight/bias (its LayerScale "gamma" is no norm).
        ours = {"blocks.0.norm1.gamma", "norm.gamma", "fc_norm.gamma"}
        return "vitserve" if inner & ours else "timm"
    sample = ", ".join(sorted(keys)[:8])
    raise ValueError(f"cannot tell the checkpoint's format from its keys ({len(keys)} keys: {sample}, ...)")


def to_vitserve(raw: dict[str, np.ndarray], fmt: str = "auto") -> StateDict:
    """Source-format weights → our names and layouts, float32. Raises ``CheckpointMismatch`` naming keys
    the format's table does not know (or fused parts it lacks), ``ValueError`` for an MAE pre-training
    checkpoint or an unknown format."""
    fmt = detect_format(raw) if fmt == "auto" else _checked_format(fmt)
    weights = _unwrap(raw, fmt)
    if fmt in ("timm", "mae"):
        pretraining = sorted(k for k in weights if _MAE_PRETRAIN.match(k))
        if pretraining:
            raise ValueError(
                "this is an MAE pre-training checkpoint (it has "
                + ", ".join(pretraining[:3])
                + ", ...): it has no classifier and its encoder ends in a norm the fine-tuned model does not "
                "use; convert a fine-tuned checkpoint (e.g. mae_finetuned_vit_base.pth) instead"
            )
    # Our own names need no table; convert_file checks names and shapes against the config.
    state = rename_to_ours(weights, RULES[fmt]) if fmt in RULES else dict(weights)
    return {k: _float32(v) for k, v in state.items()}


def from_vitserve_to_mindformers(state: StateDict) -> dict[str, np.ndarray]:
    """Our state dict → MindFormers ``vit_base_p16`` names and layouts (the inverse of the MindFormers
    table). Only the mean pool maps: MindFormers' token path has no final norm, so a token-pool model
    cannot be represented there without changing its outputs."""
    if "norm.gamma" in state:
        raise ValueError(
            "a token-pool model (with a final 'norm') has no MindFormers equivalent: MindFormers' ViT has "
            "no final norm on its token path; only mean-pool (fc_norm) models convert to MindFormers"
        )
    return rename_to_theirs(state, MINDFORMERS_RULES)


def infer_config(state: StateDict, *, num_heads: int | None = None, layer_norm_eps: float = 1e-6) -> ViTConfig:
    """A ``ViTConfig`` from our state dict's shapes. ``num_heads`` is not in any shape: taken from the
    argument, else from the standard widths in ``KNOWN_NUM_HEADS``. ``layer_norm_eps`` is not either: it
    defaults to 1e-6 (timm, MAE, MindFormers' recipe); HF sources pass their config's value."""
    required = ["cls_token", "pos_embed", "patch_embed.proj.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointMismatch(missing, [], [])
    embed_dim = int(state["cls_token"].shape[-1])
    proj = state["patch_embed.proj.weight"]  # (D, in_chans, patch, patch)
    tokens = int(state["pos_embed"].shape[1])
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"pos_embed has {tokens} tokens: not a cls token plus a square grid")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    heads = num_heads or KNOWN_NUM_HEADS.get(embed_dim)
    if heads is None:
        raise ValueError(
            f"cannot infer num_heads for embed_dim {embed_dim} from shapes (known widths: "
            f"{', '.join(f'{d}→{h}' for d, h in KNOWN_NUM_HEADS.items())}); pass a config"
        )
    head = state.get("head.weight")
    return ViTConfig(
        img_size=grid * int(proj.shape[-1]),
        patch_size=int(proj.shape[-1]),
        in_chans=int(proj.shape[1]),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=fc1.shape[0] / embed_dim if fc1 is not None else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        global_pool="avg" if "fc_norm.gamma" in state else "token",
        num_classes=int(head.shape[0]) if head is not None else 0,
        drop_path_rate=0.0,
        layer_norm_eps=layer_norm_eps,
    )


def default_data_config(fmt: str, config: ViTConfig) -> DataConfig:
    """Preprocessing the source's weights were trained with: Google's augreg/HF weights (token pool) use
    mean = std = 0.5 and crop 0.9; MAE, MindFormers' seed and other mean-pool weights ImageNet's mean/std
    and crop 0.875."""
    token_pool_google = fmt == "hf" or (fmt in ("timm", "vitserve") and config.global_pool == "token")
    data = INCEPTION_DATA if token_pool_google else DataConfig()
    return dataclasses.replace(data, img_size=config.img_size)


def convert_file(
    path: str | os.PathLike[str], fmt: str = "auto", config: ViTConfig | None = None, *, img_size: int | None = None
) -> ConvertedModel:
    """Read, convert and check one checkpoint file.

    ``config`` overrides what the file says or its shapes imply (e.g. a tiny test model's num_heads);
    ``img_size`` re-targets the resolution, resampling ``pos_embed`` bicubically. The result's state dict
    has exactly the keys and shapes of ``VisionTransformer(result.config)``, else ``CheckpointMismatch``.
    """
    path = Path(path)
    raw = read_weights(path)
    fmt = detect_format(raw) if fmt == "auto" else _checked_format(fmt)
    state = to_vitserve(raw, fmt)
    source: dict[str, Any] = {"path": str(path.resolve()), "format": fmt, "sha256": sha256_file(path)}
    labels, described = None, None
    if fmt == "hf" and (found := read_hf_config(path)) is not None:
        described, labels = config_from_hf(found[0]), labels_from_hf(found[0])
        source["config_json"] = str(found[1])
    elif fmt == "vitserve" and path.with_name("config.json").is_file():
        described = ViTConfig.from_json(path.with_name("config.json").read_text())  # our own convert output
    if config is not None:
        target = config
    elif described is not None:
        target = described
    else:  # HF's own default eps, when no config.json says otherwise, is 1e-12
        target = infer_config(state, layer_norm_eps=1e-12 if fmt == "hf" else 1e-6)
    if img_size is not None:
        target = target.replace(img_size=img_size)
    state = adapt_pos_embed(state, target.grid_size)
    from vitserve.vit.model import parameter_shapes  # imports MindSpore: only when a file is converted

    check_state_dict(parameter_shapes(target), state)
    data = default_data_config(fmt, target)
    if fmt == "vitserve" and path.with_name("data.json").is_file():
        data = DataConfig.from_dict(json.loads(path.with_name("data.json").read_text()))
    return ConvertedModel(state=state, config=target, data=data, source=source, labels=labels)


def _checked_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    return fmt  # type: ignore[return-value]


def _unwrap(raw: dict[str, np.ndarray], fmt: str) -> dict[str, np.ndarray]:
    """The model's own weights: wrappers stripped (MAE's ``model.``, timm's ``state_dict.``, DDP's
    ``module.``), training state dropped with a log line."""
    weights: dict[str, np.ndarray] = {}
    dropped = []
    for key, value in raw.items():
        if _TRAINING_STATE.match(key):
            dropped.append(key)
            continue
        key = key.removeprefix("module.")
        if fmt == "mae":
            key = key.removeprefix("model.")
        elif fmt in ("timm", "vitserve"):
            key = key.removeprefix("state_dict.")
        weights[key.removeprefix("module.")] = value
    if dropped:
        logger.info("dropped %d training-state entries that hold no model weights (%s, ...)", len(dropped), dropped[0])
    return weights


def _float32(value: np.ndarray) -> np.ndarray:
    # Our parameters are float32 whatever the source saved (fp16/bf16 releases); compute_dtype applies at
    # run time, not in the checkpoint.
    return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
