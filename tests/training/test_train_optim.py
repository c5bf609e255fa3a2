"""Optimizer groups, parameter by parameter, and the AdamW update against a numpy reference of PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Parameter, Tensor

from tests.tiny import TINY
from vitserve.training.optim import AdamW, ParamGroup, build_optimizer, layer_id, param_group
from vitserve.vit.model import create_model

DEPTH = TINY.depth

# name → (weight decay?, layer id) for every parameter of the tiny avg-pool model; 0.65 ** (3 − id) lr scale.
EXPECTED = {
    "cls_token": (False, 0),
    "pos_embed": (False, 0),
    "patch_embed.proj.weight": (True, 0),
    "patch_embed.proj.bias": (False, 0),
    "fc_norm.gamma": (False, 3),
    "fc_norm.beta": (False, 3),
    "head.weight": (True, 3),
    "head.bias": (False, 3),
}
for _i in range(DEPTH):
    for _leaf, _decay in [
        ("norm1.gamma", False), ("norm1.beta", False), ("attn.qkv.weight", True), ("attn.qkv.bias", False),
        ("attn.proj.weight", True), ("attn.proj.bias", False), ("norm2.gamma", False), ("norm2.beta", False),
        ("mlp.fc1.weight", True), ("mlp.fc1.bias", False), ("mlp.fc2.weight", True), ("mlp.fc2.bias", False),
    ]:  # fmt: skip
        EXPECTED[f"blocks.{_i}.{_leaf}"] = (_decay, _i + 1)


def test_every_parameter_of_the_model_gets_its_group() -> None:
    model = create_model(TINY)
    optimizer = build_optimizer(
        model, np.zeros(4), depth=DEPTH, weight_decay=0.05, layer_decay=0.65, betas=(0.9, 0.999), eps=1e-8
    )
    names = [p.name for p in optimizer.parameters]
    assert sorted(names) == sorted(EXPECTED)
    for name, scale, decay in zip(names, optimizer.lr_scales, optimizer.weight_decays, strict=True):
        want_decay, want_layer = EXPECTED[name]
        assert decay == (0.05 if want_decay else 0.0), name
        assert scale == pytest.approx(0.65 ** (DEPTH + 1 - want_layer)), name


@pytest.mark.parametrize(
    ("name", "shape", "layer", "decay"),
    [
        ("blocks.11.attn.qkv.weight", (2304, 768), 12, 0.05),
        ("blocks.0.norm1.gamma", (768,), 1, 0.0),
        ("norm.gamma", (768,), 13, 0.0),  # token-pool final norm: head level
        ("head.weight", (1000, 768), 13, 0.05),
        ("pos_embed", (1, 197, 768), 0, 0.0),
        ("cls_token", (1, 1, 768), 0, 0.0),
    ],
)
def test_base_model_groups(name: str, shape: tuple[int, ...], layer: int, decay: float) -> None:
    group = param_group(name, shape, depth=12, weight_decay=0.05, layer_decay=0.65)
    assert (group.layer_id, group.weight_decay) == (layer, decay)
    assert group.lr_scale == pytest.approx(0.65 ** (13 - layer))
    assert layer_id(name, 12) == layer


def _torch_adamw(p, g, m, v, step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's AdamW step, written out in numpy (float64)."""
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2**step) + eps
    return p - lr / (1 - b1**step) * m / denom, m, v


def test_adamw_matches_pytorch_semantics_per_group() -> None:
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((3, 4)), rng.standard_normal((4,))]
    params = [Parameter(Tensor(a.astype(np.float32)), name=f"p{i}") for i, a in enumerate(init)]
    groups = [ParamGroup(1, 1.0, 0.05), ParamGroup(0, 0.5, 0.0)]
    lr_table = np.array([1e-2, 2e-2, 3e-2])
    optimizer = AdamW(params, groups, lr_table)
    ref = [(a.copy(), np.zeros_like(a), np.zeros_like(a)) for a in init]
    for step in range(1, 5):  # the 4th step reuses the last lr
        grads = [rng.standard_normal(a.shape) for a in init]
        optimizer(tuple(Tensor(g.astype(np.float32)) for g in grads))
        lr = lr_table[min(step - 1, 2)]
        ref = [
            _torch_adamw(p, g, m, v, step, lr * grp.lr_scale, grp.weight_decay)
            for (p, m, v), g, grp in zip(ref, grads, groups, strict=True)
        ]
    for param, (want, _, _) in zip(params, ref, strict=True):
        np.testing.assert_allclose(param.asnumpy(), want, rtol=1e-5, atol=1e-6)
    assert int(optimizer.global_step.asnumpy()) == 4
