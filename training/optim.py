"""AdamW with MAE's parameter groups: no weight decay on biases, norms, pos_embed and cls_token, and
layer-wise lr decay (patch_embed/cls_token/pos_embed → layer 0, ``blocks.i`` → i + 1, the rest → depth + 1).

MindFormers' layer-decay code crashed and decayed the wrong groups; here each parameter's group is a pure
function of its name (``param_group``) and is tested name by name.

The optimizer is our own cell rather than ``nn.AdamWeightDecay`` because that one has no bias correction
(BERT's variant); the recipe's AdamW is PyTorch's (bias-corrected, decoupled weight decay).
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

# Names MAE's recipe excludes from weight decay besides every 1-D parameter (biases, LayerNorm gamma/beta).
NO_WEIGHT_DECAY = frozenset({"pos_embed", "cls_token"})


@dataclass(frozen=True)
class ParamGroup:
    """How one parameter is optimised."""

    layer_id: int  # 0 = embeddings, i + 1 = blocks.i, depth + 1 = final norm and head
    lr_scale: float  # layer_decay ** (depth + 1 − layer_id)
    weight_decay: float


def layer_id(name: str, depth: int) -> int:
    """MAE's ``get_layer_id_for_vit``: the depth of a parameter in the network, from its name."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_group(
    name: str, shape: tuple[int, ...], *, depth: int, weight_decay: float, layer_decay: float
) -> ParamGroup:
    """The group of parameter ``name`` with ``shape`` in a ViT of ``depth`` blocks."""
    lid = layer_id(name, depth)
    no_decay = len(shape) == 1 or name in NO_WEIGHT_DECAY
    return ParamGroup(
        layer_id=lid, lr_scale=layer_decay ** (depth + 1 - lid), weight_decay=0.0 if no_decay else weight_decay
    )


class AdamW(nn.Cell):
    """PyTorch's AdamW over ``params``, each with its own lr scale and weight decay, following an lr table.

    ``construct(grads)`` does one step: ``lr = lr_table[step] × lr_scale``; ``p ← p − lr·wd·p``;
    ``m, v`` updated; ``p ← p − lr · m̂ / (√v̂ + eps)`` with bias-corrected ``m̂, v̂``. The step counter,
    ``m`` (``adam_m.<name>``) and ``v`` (``adam_v.<name>``) are parameters, so they checkpoint with the model.
    """

    def __init__(
        self,
        params: list[Parameter],
        groups: list[ParamGroup],
        lr_table: np.ndarray,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if len(params) != len(groups):
            raise ValueError(f"{len(params)} parameters but {len(groups)} groups")
        self.parameters = ParameterTuple(params)
        self.exp_avg = self.parameters.clone(prefix="adam_m", init="zeros")
        self.exp_avg_sq = self.parameters.clone(prefix="adam_v", init="zeros")
        self.global_step = Parameter(Tensor(0, ms.int32), name="global_step")
        self.lr_table = Tensor(np.asarray(lr_table, np.float32))
        self.last_index = len(lr_table) - 1
        self.lr_scales = tuple(float(g.lr_scale) for g in groups)
        self.weight_decays = tuple(float(g.weight_decay) for g in groups)
        self.group_values = tuple(sorted(set(zip(self.lr_scales, self.weight_decays, strict=True))))
        self.group_of = tuple(
            self.group_values.index(pair) for pair in zip(self.lr_scales, self.weight_decays, strict=True)
        )
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.adam = ops.AdamWeightDecay()

    def current_lr(self) -> float:
        """The unscaled lr the next step will use (for logging)."""
        index = min(int(self.global_step.asnumpy()), self.last_index)
        return float(self.lr_table.asnumpy()[index])

    def construct(self, grads: tuple[Tensor, ...]) -> Tensor:
        index = ops.minimum(self.global_step, self.last_index)
        lr = self.lr_table[index]
        step = (self.global_step + 1).astype(ms.float32)
        bias1 = 1.0 - ops.pow(self.beta1, step)
        root_bias2 = ops.sqrt(1.0 - ops.pow(self.beta2, step))
        # MindSpore's fused kernel has no bias correction; folding it into its lr, eps and decay gives
        # PyTorch's update exactly: lr/b1 · m / (√v/√b2 + eps) = (lr·√b2/b1) · m / (√v + eps·√b2), and
        # (lr·√b2/b1)·(wd·b1/√b2) = lr·wd. One kernel per parameter instead of ~15 small ones.
        eps = self.eps * root_bias2
        fused_lrs, decays = [], []
        for scale, weight_decay in self.group_values:  # scalars once per group, not once per parameter
            fused_lrs.append(lr * scale * root_bias2 / bias1)
            decays.append(weight_decay * bias1 / root_bias2)
        for i in range(len(self.parameters)):
            g = self.group_of[i]
            self.adam(
                self.parameters[i],
                self.exp_avg[i],
                self.exp_avg_sq[i],
                fused_lrs[g],
                self.beta1,
                self.beta2,
                eps,
                decays[g],
                grads[i],
            )
        return ops.assign_add(self.global_step, ops.ones_like(self.global_step))


def build_optimizer(
    model: nn.Cell,
    lr_table: np.ndarray,
    *,
    depth: int,
    weight_decay: float,
    layer_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> AdamW:
    """AdamW over the model's trainable parameters, grouped by ``param_group``."""
    params = list(model.trainable_params())
    groups = [
        param_group(p.name, tuple(p.shape), depth=depth, weight_decay=weight_decay, layer_decay=layer_decay)
        for p in params
    ]
    return AdamW(params, groups, lr_table, betas=betas, eps=eps)
