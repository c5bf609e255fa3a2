"""One compiled training step: forward with drop-path, soft-target loss, gradients, all-reduce, AdamW.

Drop-path masks are an input of the step, drawn on the host from ``default_rng([seed, step])`` for the whole
global batch: MindSpore's CPU random kernels keep their state inside the compiled graph, where it can be
neither saved nor restored, so a resumed run would redraw different masks. As inputs, they make resume
exact and give every data-parallel rank its slice of the masks one worker would draw.
"""

from __future__ import annotations

from collections.abc import Callable

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from vitserve.training.loss import soft_target_cross_entropy
from vitserve.training.optim import AdamW
from vitserve.vit.model import VisionTransformer


def drop_path_rates(depth: int, drop_path_rate: float) -> np.ndarray:
    """Per-block drop probability, rising linearly from 0 to ``drop_path_rate`` (as the model's DropPath)."""
    return np.linspace(0.0, drop_path_rate, depth)


def drop_path_masks(
    depth: int, drop_path_rate: float, *, seed: int, step: int, global_batch: int, rank: int, batch_size: int
) -> np.ndarray:
    """(depth, 2, B) float32 residual-branch scales for this rank: 0 (dropped) or 1/keep_prob (kept).

    Drawn for the global batch at this step, then sliced to rank ``rank``'s samples.
    """
    keep = 1.0 - drop_path_rates(depth, drop_path_rate)[:, None, None]
    draws = np.random.default_rng([seed, step, 1]).random((depth, 2, global_batch))
    masks = np.floor(keep + draws) / keep
    return masks[:, :, rank * batch_size : (rank + 1) * batch_size].astype(np.float32)


class TrainNetwork(nn.Cell):
    """The model's forward with drop-path masks given as input, followed by the loss.

    Follows ``VisionTransformer.forward_features`` stage by stage with its own cells and parameters, scaling
    each residual branch by its mask (with all-ones masks it computes exactly ``model(x)``).
    ``construct(x (B, 3, S, S), target (B, C), masks (depth, 2, B)) → scalar loss × loss_scale``.
    """

    def __init__(self, model: VisionTransformer, *, loss_scale: float = 1.0) -> None:
        super().__init__(auto_prefix=False)  # keep the model's parameter names (no "model." prefix)
        self.model = model
        self.loss_scale = float(loss_scale)

    def logits(self, x: Tensor, masks: Tensor) -> Tensor:
        model = self.model
        x = model.patch_embed(x.astype(model.compute_dtype))
        cls = model.cls_token.astype(x.dtype).broadcast_to((x.shape[0], -1, -1))
        x = ops.cat((cls, x), axis=1) + model.pos_embed.astype(x.dtype)
        for i in range(len(model.blocks)):
            block = model.blocks[i]
            x = x + block.attn(block.norm1(x)) * masks[i, 0].reshape(-1, 1, 1).astype(x.dtype)
            x = x + block.mlp(block.norm2(x)) * masks[i, 1].reshape(-1, 1, 1).astype(x.dtype)
        if model.global_pool == "token":
            x = model.norm(x)
        return model.forward_head(x)

    def construct(self, x: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        return soft_target_cross_entropy(self.logits(x, masks), target) * self.loss_scale


StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def make_train_step(network: TrainNetwork, optimizer: AdamW, reducer: nn.Cell | None = None) -> StepFn:
    """A compiled ``step(x, target, masks) -> unscaled loss`` that updates the parameters in place.

    With ``reducer`` (``nn.DistributedGradReducer``), gradients are averaged over the ranks before the update.
    """
    grad_fn = ms.value_and_grad(network, None, optimizer.parameters)
    inverse_scale = 1.0 / network.loss_scale

    @ms.jit
    def step(x: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        loss, grads = grad_fn(x, target, masks)
        if inverse_scale != 1.0:
            grads = tuple(g * inverse_scale for g in grads)
        if reducer is not None:
            grads = reducer(grads)
        optimizer(grads)
        return loss * inverse_scale

    return step
