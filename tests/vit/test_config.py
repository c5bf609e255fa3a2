"""ViTConfig / DataConfig: the variant table, the seed's alias, JSON round trips and validation."""

from __future__ import annotations

import json
import math

import pytest

from vitserve.vit.config import ALIASES, VARIANTS, DataConfig, ViTConfig, get_config, get_variant, variant_names
from vitserve.vit.model import parameter_shapes

# Parameter counts of timm's models of the same names (1000-class heads).
TIMM_PARAMS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_large_patch16_224": 304_326_632,
    "vit_huge_patch14_224": 632_045_800,
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds(name: str) -> None:
    variant = get_variant(name)
    config = variant.config
    assert ViTConfig.from_json(config.to_json()) == config
    assert variant.data.img_size == config.img_size == 224
    params = sum(math.prod(shape) for shape in parameter_shapes(config).values())
    assert params == TIMM_PARAMS[name]


def test_seed_alias_is_the_mae_base() -> None:
    config = get_config("vit_base_p16")
    assert ALIASES["vit_base_p16"] == "vit_base_patch16_224"
    assert (config.embed_dim, config.depth, config.num_heads, config.patch_size) == (768, 12, 12, 16)
    assert (config.global_pool, config.layer_norm_eps, config.drop_path_rate) == ("avg", 1e-6, 0.1)
    assert get_variant("vit_base_p16").data == DataConfig()  # ImageNet mean/std, crop 0.875
    assert get_config("vit_base_p16", num_classes=10).num_classes == 10


def test_unknown_variant_lists_known_ones() -> None:
    with pytest.raises(KeyError) as err:
        get_variant("vit_gigantic")
    message = str(err.value)
    assert "vit_gigantic" in message
    assert all(name in message for name in variant_names())
    assert "vit_base_p16" in variant_names()


def test_json_round_trip_and_seed_names() -> None:
    config = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, global_pool="token",
                       compute_dtype="float16", layer_norm_eps=1e-12, qkv_bias=False)  # fmt: skip
    assert ViTConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["global_pool"] == "token"
    seed = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    assert ViTConfig.from_dict(seed) == ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    with pytest.raises(ValueError, match=r"unknown ViTConfig field.*wings"):
        ViTConfig.from_dict({"wings": 2})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"img_size": 30}, "img_size .30. must be a positive multiple of patch_size .16."),
        ({"num_heads": 5}, "embed_dim .768. must be a positive multiple of num_heads .5."),
        ({"global_pool": "max"}, "global_pool must be 'avg' or 'token'"),
        ({"drop_path_rate": 1.0}, "drop_path_rate must be in"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps must be > 0"),
        ({"compute_dtype": "int8"}, "compute_dtype must be"),
        ({"num_classes": -1}, "num_classes must be >= 0"),
    ],
)
def test_validation_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViTConfig(**changes)  # type: ignore[arg-type]


def test_data_config() -> None:
    data = DataConfig()
    assert data.resize_size == 256  # 224 / 0.875, not the seed's hard-coded 256 for every size
    assert DataConfig(img_size=384, crop_pct=1.0).resize_size == 384
    assert DataConfig.from_dict(json.loads(json.dumps(data.to_dict()))) == data  # lists back to tuples
    bad: list[dict[str, object]] = [{"crop_pct": 0.0}, {"interpolation": "lanczos"}, {"std": (0.5, 0.0, 0.5)}]
    for changes in bad:
        with pytest.raises(ValueError, match="invalid DataConfig"):
            DataConfig.from_dict(changes)
