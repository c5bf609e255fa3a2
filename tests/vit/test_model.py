"""The MindSpore ViT: GRAPH_MODE and PyNative forward, pools, drop-path, timm's layout, pos-embed resampling,
reduced-precision compute."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from tests.tiny import TINY
from tests.vit import torch_refs
from vitserve.vit.checkpoint import load_state_dict, state_dict
from vitserve.vit.config import ViTConfig
from vitserve.vit.model import create_model
from vitserve.vit.pos_embed import resample_pos_embed


def images(config: ViTConfig, size: int = 2, seed: int = 0) -> ms.Tensor:
    rng = np.random.default_rng(seed)
    return ms.Tensor(rng.standard_normal((size, 3, config.img_size, config.img_size)).astype(np.float32))


def eval_model(config: ViTConfig, seed: int = 0) -> ms.nn.Cell:
    """An eval-mode model with random O(1) weights everywhere: MAE's initialisation (head std 2e-5, unit
    norms) would make the logits ~1e-4 and hide most differences."""
    model = create_model(config)
    rng = np.random.default_rng(seed)
    state = {}
    for name, value in state_dict(model).items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        if name.endswith("gamma"):
            state[name] = 1 + 0.2 * noise
        elif value.ndim == 1:
            state[name] = 0.2 * noise
        else:
            state[name] = noise / np.sqrt(np.prod(value.shape[1:]))
    load_state_dict(model, state)
    model.set_train(False)
    return model


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_graph_mode_forward_matches_pynative(graph_mode: None, pool: str) -> None:
    config = TINY.replace(global_pool=pool)
    model = eval_model(config)
    x = images(config)
    compiled = model(x).asnumpy()
    assert compiled.shape == (2, 10) and compiled.dtype == np.float32 and np.isfinite(compiled).all()
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the fixture restores the previous mode
    np.testing.assert_allclose(model(x).asnumpy(), compiled, atol=1e-5)
    # The pool really is what the config says: the other pool's norm is absent.
    names = set(state_dict(model))
    assert ("fc_norm.gamma" in names) == (pool == "avg") and ("norm.gamma" in names) == (pool == "token")


def test_no_head_returns_pooled_features(pynative_mode: None) -> None:
    config = TINY.replace(num_classes=0)
    assert eval_model(config)(images(config)).shape == (2, 32)


def test_drop_path_is_identity_in_eval_and_active_in_training(pynative_mode: None) -> None:
    config = TINY.replace(drop_path_rate=0.5)
    model, plain = eval_model(config), eval_model(config.replace(drop_path_rate=0.0))
    load_state_dict(plain, state_dict(model))
    x = images(config, size=32)
    expected = plain(x).asnumpy()
    np.testing.assert_array_equal(model(x).asnumpy(), expected)
    model.set_train(True)
    # Block 2 of 2 keeps each sample's branches with probability 0.5 (and scales them by 2): 32 samples
    # all kept, or two runs drawing the same masks, has probability about 2**-32.
    trained = [model(x).asnumpy() for _ in range(2)]
    changed = np.abs(trained[0] - expected).max(axis=1) > 1e-3
    assert changed.any()
    assert not np.array_equal(trained[0], trained[1])


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_parameter_names_follow_timm(pool: str) -> None:
    config = TINY.replace(global_pool=pool)
    model_state = state_dict(create_model(config))
    ours = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v.shape for k, v in model_state.items()}
    timm = {k: tuple(v.shape) for k, v in torch_refs.timm_vit(config).state_dict().items()}
    assert ours == timm


@pytest.mark.parametrize(("old", "new"), [(4, 6), (14, 24), (6, 4)])
def test_pos_embed_resampling_matches_torch_bicubic(old: int, new: int) -> None:
    import torch
    import torch.nn.functional as F

    pos = np.random.default_rng(0).standard_normal((1, 1 + old * old, 8)).astype(np.float32)
    grid = torch.from_numpy(pos[:, 1:]).reshape(1, old, old, 8).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    expected = np.concatenate([pos[:, :1], resized.permute(0, 2, 3, 1).reshape(1, new * new, 8).numpy()], axis=1)
    np.testing.assert_allclose(resample_pos_embed(pos, new), expected, atol=1e-5)


def test_float16_compute_runs_close_to_float32(graph_mode: None) -> None:
    config = TINY
    reference = eval_model(config)
    half = eval_model(config.replace(compute_dtype="float16"))
    load_state_dict(half, state_dict(reference))
    x = images(config)
    logits = half(x).asnumpy()  # compiled
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the reference needs no compile; the fixture restores the mode
    expected = reference(x).asnumpy()
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    # fp16 matmuls keep ~3 significant digits; LayerNorm and softmax stay fp32.
    np.testing.assert_allclose(logits, expected, atol=2e-2 * max(1.0, float(np.abs(expected).max())))
