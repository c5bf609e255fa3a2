"""The Vision Transformer as one MindSpore cell: ``forward_features`` → pool → ``forward_head``."""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn
from mindspore.common import initializer as init

from vitserve.vit.config import ViTConfig
from vitserve.vit.layers import Block, LayerNorm, PatchEmbed, ms_dtype


class VisionTransformer(nn.Cell):
    """ViT in timm's parameter layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
    ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm`` or ``fc_norm``, ``head``),
    with LayerNorm's ``weight``/``bias`` named ``gamma``/``beta``.

    Input ``(B, in_chans, img_size, img_size)`` float32; output ``(B, num_classes)`` float32 logits, or
    ``(B, embed_dim)`` pooled features when ``num_classes`` is 0.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.global_pool = config.global_pool
        self.compute_dtype = ms_dtype(config.compute_dtype)
        self.patch_embed = PatchEmbed(
            img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans, embed_dim=dim
        )
        self.cls_token = Parameter(init.initializer(init.Normal(1e-6), (1, 1, dim), ms.float32), name="cls_token")
        self.pos_embed = Parameter(
            init.initializer(init.TruncatedNormal(0.02), (1, config.num_patches + 1, dim), ms.float32),
            name="pos_embed",
        )
        # Stochastic depth rises linearly from 0 at the first block to drop_path_rate at the last.
        rates: list[float] = np.linspace(0.0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.CellList(
            [
                Block(
                    dim=dim,
                    num_heads=config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    drop_path=float(rate),
                    eps=config.layer_norm_eps,
                )
                for rate in rates
            ]
        )
        # timm's convention: the token pool normalises all tokens before pooling ("norm"); the mean pool
        # normalises after pooling ("fc_norm"). MindFormers dropped "norm" on its token path; we keep it.
        if config.global_pool == "token":
            self.norm = LayerNorm(dim, eps=config.layer_norm_eps)
        else:
            self.fc_norm = LayerNorm(dim, eps=config.layer_norm_eps)
        self.has_head = config.num_classes > 0
        if self.has_head:
            self.head = nn.Dense(dim, config.num_classes, has_bias=True)
        self._init_weights()
        if config.compute_dtype != "float32":
            for cell in self.cells_and_names():
                if isinstance(cell[1], (nn.Dense, nn.Conv2d)):
                    cell[1].to_float(self.compute_dtype)

    def _init_weights(self) -> None:
        """MAE's initialisation: xavier-uniform linears and patch projection, zero biases, small head."""
        for name, cell in self.cells_and_names():
            if isinstance(cell, (nn.Dense, nn.Conv2d)):
                shape = cell.weight.shape
                fan_in, fan_out = int(np.prod(shape[1:])), int(shape[0])
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                weight_init = init.TruncatedNormal(2e-5) if name == "head" else init.Uniform(bound)
                cell.weight.set_data(init.initializer(weight_init, shape, ms.float32))
                if cell.bias is not None:
                    cell.bias.set_data(init.initializer("zeros", cell.bias.shape, ms.float32))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, 1 + num_patches, D) tokens after the blocks (and ``norm`` for the token pool)."""
        x = self.patch_embed(x.astype(self.compute_dtype))
        cls = self.cls_token.astype(x.dtype).broadcast_to((x.shape[0], -1, -1))
        x = ms.ops.cat((cls, x), axis=1) + self.pos_embed.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        if self.global_pool == "token":
            x = self.norm(x)
        return x

    def pool(self, x: Tensor) -> Tensor:
        """(B, 1 + N, D) → (B, D): the cls token, or the mean of the patch tokens then ``fc_norm``."""
        if self.global_pool == "token":
            return x[:, 0]
        return self.fc_norm(x[:, 1:].mean(axis=1))

    def forward_head(self, x: Tensor) -> Tensor:
        x = self.pool(x)
        if self.has_head:
            x = self.head(x)
        return x.astype(ms.float32)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def create_model(config: ViTConfig) -> VisionTransformer:
    """A randomly initialised model. Use ``vit.checkpoint.load_state_dict`` (or the store) for weights."""
    return VisionTransformer(config)


def parameter_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``VisionTransformer(config)`` and its shape, read from the model itself.

    The cell is built without initialising its parameters' data (0.1 s and no weight memory for ViT-B/16), so
    this list can never drift from the model: it is the model's own.
    """
    from mindspore.nn.utils import no_init_parameters

    with no_init_parameters():
        model = VisionTransformer(config)
    return {p.name: tuple(p.shape) for p in model.get_parameters()}
