"""Soft-target cross-entropy: the loss of mixup/cutmix and label smoothing (timm's ``SoftTargetCrossEntropy``)."""

from __future__ import annotations

from mindspore import Tensor, ops


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``−Σ_c target[b, c] · log_softmax(logits)[b, c]``.

    ``logits`` (B, C) float32; ``target`` (B, C) float32 rows summing to 1 (one-hot, smoothed or mixed).
    Returns a float32 scalar. log_softmax in float32 keeps it finite for large logits.
    """
    log_probs = ops.log_softmax(logits.astype(target.dtype), axis=-1)
    return (-(target * log_probs).sum(axis=-1)).mean()
