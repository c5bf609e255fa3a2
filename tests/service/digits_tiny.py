"""A tiny ViT trained on scikit-learn's digits: a real classifier for reduced-precision accuracy tests.

Random weights make a poor judge of quantisation (their features barely differ between images, so any noise
flips the top-1), and training in every test run costs ~1.5 min on two busy cores, so the trained weights
are kept in ``data/digits_tiny_vit.npz``. Regenerate them with ``python -m tests.service.digits_tiny``
(8 epochs of AdamW on 4/5 of the digits; the held-out fifth is the validation split used by the tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.tiny import TINY
from vitserve.vit.checkpoint import StateDict
from vitserve.vit.config import DataConfig

WEIGHTS = Path(__file__).parent / "data" / "digits_tiny_vit.npz"
CONFIG = TINY.replace(embed_dim=64)  # wider than TINY: it is trained to a real classifier
DATA = DataConfig(img_size=32, crop_pct=1.0)
LABELS = [str(i) for i in range(10)]


def digits() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(8×8 uint8 images, labels, validation mask: every fifth image)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [(image * 255 / 16).astype(np.uint8) for image in bunch.images]
    labels = bunch.target.astype(np.int32)
    return images, labels, np.arange(len(labels)) % 5 == 0


def trained_state() -> StateDict:
    with np.load(WEIGHTS) as archive:
        return {name: archive[name] for name in archive.files}


def train(epochs: int = 8) -> StateDict:
    import mindspore as ms

    from vitserve.vit.checkpoint import state_dict
    from vitserve.vit.model import VisionTransformer
    from vitserve.vit.preprocess import preprocess

    images, labels, val = digits()
    x, y = preprocess([im for im, v in zip(images, val, strict=True) if not v], DATA), labels[~val]
    ms.set_seed(0)
    net = VisionTransformer(CONFIG)
    opt = ms.nn.AdamWeightDecay(net.trainable_params(), learning_rate=2e-3, weight_decay=0.01)
    loss_fn = ms.nn.CrossEntropyLoss()
    grad_fn = ms.value_and_grad(lambda xb, yb: loss_fn(net(xb), yb), None, opt.parameters)

    @ms.jit
    def step(xb: ms.Tensor, yb: ms.Tensor) -> ms.Tensor:
        loss, grads = grad_fn(xb, yb)
        opt(grads)
        return loss

    net.set_train(True)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(perm) - 63, 64):
            step(ms.Tensor(x[perm[i : i + 64]]), ms.Tensor(y[perm[i : i + 64]]))
    net.set_train(False)
    return state_dict(net)


if __name__ == "__main__":
    np.savez_compressed(WEIGHTS, **train())
    print(f"wrote {WEIGHTS}")
