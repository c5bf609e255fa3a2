"""Model and preprocessing configuration: ``ViTConfig``, ``DataConfig`` and the named variants.

Hyperparameters use timm's vocabulary, so that converted checkpoints only need renaming. The seed's
MindFormers names (``vit_base_p16``, ``hidden_size``, ...) are accepted at the edges only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

GlobalPool = Literal["avg", "token"]
ComputeDtype = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a Vision Transformer."""

    img_size: int = 224  # input height and width in pixels
    patch_size: int = 16  # side of the square patches; img_size must be a multiple of it
    in_chans: int = 3  # input channels (RGB)
    embed_dim: int = 768  # token width
    depth: int = 12  # number of transformer blocks
    num_heads: int = 12  # attention heads; embed_dim must be a multiple of it
    mlp_ratio: float = 4.0  # MLP hidden width as a multiple of embed_dim
    qkv_bias: bool = True  # bias on the fused query/key/value projection
    # "avg": mean of the patch tokens (cls excluded) then fc_norm (MAE fine-tuning);
    # "token": final norm then the cls token (original ViT, timm's augreg weights, Hugging Face).
    global_pool: GlobalPool = "avg"
    num_classes: int = 1000  # classifier outputs; 0 means no head (the pooled features are returned)
    drop_path_rate: float = 0.0  # stochastic depth at the last block, rising linearly from 0 at the first
    layer_norm_eps: float = 1e-6  # MindFormers' config default of 1e-12 was a bug; its recipe used 1e-6
    compute_dtype: ComputeDtype = "float32"  # dtype of matmuls/convs; LayerNorm and softmax stay float32

    def __post_init__(self) -> None:
        errors = []
        if self.img_size <= 0 or self.patch_size <= 0 or self.img_size % self.patch_size:
            errors.append(f"img_size ({self.img_size}) must be a positive multiple of patch_size ({self.patch_size})")
        if self.embed_dim <= 0 or self.num_heads <= 0 or self.embed_dim % self.num_heads:
            errors.append(f"embed_dim ({self.embed_dim}) must be a positive multiple of num_heads ({self.num_heads})")
        if self.depth < 0 or self.in_chans <= 0 or self.num_classes < 0 or self.mlp_ratio <= 0:
            errors.append("depth, num_classes must be >= 0 and in_chans, mlp_ratio > 0")
        if self.global_pool not in ("avg", "token"):
            errors.append(f"global_pool must be 'avg' or 'token', got {self.global_pool!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            errors.append(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not self.layer_norm_eps > 0:
            errors.append(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.compute_dtype not in ("float32", "float16", "bfloat16"):
            errors.append(f"compute_dtype must be float32, float16 or bfloat16, got {self.compute_dtype!r}")
        if errors:
            raise ValueError("invalid ViTConfig: " + "; ".join(errors))

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        return cls(**known_fields(cls, _from_seed_names(data), "ViTConfig"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ViTConfig:
        return cls.from_dict(json.loads(text))


Interpolation = Literal["bicubic", "bilinear", "nearest"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How an image becomes the model's input. Travels with the weights, in the model card."""

    img_size: int = 224  # side of the square centre crop fed to the model
    crop_pct: float = 0.875  # the shorter side is first resized to int(img_size / crop_pct)
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.img_size <= 0 or not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"invalid DataConfig: img_size {self.img_size}, crop_pct {self.crop_pct}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"invalid DataConfig: interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"invalid DataConfig: mean {self.mean}, std {self.std}")
        # JSON gives lists; keep the frozen value hashable and equal to the tuple form.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop (256 for 224 at 0.875). The seed hard-coded 256."""
        return int(self.img_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        return cls(**known_fields(cls, data, "DataConfig"))


# Google's augreg weights (timm's token-pool variants) were trained with mean = std = 0.5 and crop 0.9.
INCEPTION_DATA = DataConfig(crop_pct=0.9, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Variant:
    config: ViTConfig
    data: DataConfig


_MAE = DataConfig()

VARIANTS: dict[str, Variant] = {
    "vit_tiny_patch16_224": Variant(
        ViTConfig(embed_dim=192, depth=12, num_heads=3, global_pool="token"), INCEPTION_DATA
    ),
    "vit_small_patch16_224": Variant(
        ViTConfig(embed_dim=384, depth=12, num_heads=6, global_pool="token"), INCEPTION_DATA
    ),
    # The seed's model: MAE fine-tuned ViT-B/16, mean pool + fc_norm, drop-path 0.1 in training.
    "vit_base_patch16_224": Variant(ViTConfig(drop_path_rate=0.1), _MAE),
    "vit_large_patch16_224": Variant(ViTConfig(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.1), _MAE),
    "vit_huge_patch14_224": Variant(
        ViTConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16, drop_path_rate=0.1), _MAE
    ),
}

ALIASES: dict[str, str] = {"vit_base_p16": "vit_base_patch16_224"}


def variant_names() -> list[str]:
    return sorted([*VARIANTS, *ALIASES])


def get_variant(name: str) -> Variant:
    """Look up a named variant (or the seed's alias); an unknown name lists the known ones."""
    canonical = ALIASES.get(name, name)
    try:
        return VARIANTS[canonical]
    except KeyError:
        raise KeyError(f"unknown ViT variant {name!r}; known: {', '.join(variant_names())}") from None


def get_config(name: str, **overrides: Any) -> ViTConfig:
    return get_variant(name).config.replace(**overrides)


# MindFormers' vit_config.py spelling → ours.
_SEED_NAMES = {
    "image_size": "img_size",
    "hidden_size": "embed_dim",
    "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads",
    "drop_path": "drop_path_rate",
}


def _from_seed_names(data: dict[str, Any]) -> dict[str, Any]:
    return {_SEED_NAMES.get(key, key): value for key, value in data.items()}


def known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """``data`` unchanged when every key is a field of the dataclass ``cls``; else a ValueError listing both."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return dict(data)
