"""The ViT's building blocks as MindSpore cells, in timm's parameter layout.

Every layer takes explicit keyword arguments, so each can be built and tested alone. MindSpore's
defaults that silently change results are always set explicitly: ``nn.Conv2d`` pads 'same' without a
bias, ``nn.GELU`` is the tanh approximation, ``nn.LayerNorm`` uses eps 1e-7.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def ms_dtype(name: str) -> ms.Type:
    return _DTYPES[name]


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis, computed in float32 whatever the input dtype.

    Parameters are ``gamma``/``beta`` (MindSpore's names for timm's ``weight``/``bias``).
    """

    def __init__(self, dim: int, *, eps: float) -> None:
        super().__init__((dim,), begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x: Tensor) -> Tensor:
        y, _, _ = self.layer_norm(x.astype(ms.float32), self.gamma, self.beta)
        return y.astype(x.dtype)


class PatchEmbed(nn.Cell):
    """(B, C, H, W) image → (B, N, D) patch tokens by a stride-``patch_size`` convolution."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, pad_mode="valid", has_bias=True
        )

    def construct(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        b, d = x.shape[0], x.shape[1]
        return x.reshape(b, d, -1).transpose(0, 2, 1)


class Attention(nn.Cell):
    """Multi-head self-attention with a fused qkv projection whose output rows are [q | k | v]."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Dense(dim, dim * 3, has_bias=qkv_bias)
        self.proj = nn.Dense(dim, dim, has_bias=True)

    def construct(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, N, head_dim)
        attn = ops.matmul(q * self.scale, k.swapaxes(-2, -1))
        # Softmax in float32 even under reduced precision: its exp overflows float16 on long rows.
        attn = ops.softmax(attn.astype(ms.float32), axis=-1).astype(v.dtype)
        x = ops.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        return self.proj(x)


class Mlp(nn.Cell):
    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Dense(dim, hidden_dim, has_bias=True)
        # Exact (erf) GELU as in MAE/timm; MindSpore's default is the tanh approximation.
        self.act = nn.GELU(approximate=False)
        self.fc2 = nn.Dense(hidden_dim, dim, has_bias=True)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Cell):
    """Stochastic depth: in training, drop the whole residual branch per sample; identity in eval."""

    def __init__(self, *, drop_prob: float) -> None:
        super().__init__()
        self.keep_prob = 1.0 - drop_prob

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = ops.floor(self.keep_prob + ops.rand(mask_shape, dtype=x.dtype))
        return x / self.keep_prob * mask


class Block(nn.Cell):
    """Pre-norm transformer block: two residual lines."""

    def __init__(
        self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_prob=drop_path)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_prob=drop_path)

    def construct(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x
