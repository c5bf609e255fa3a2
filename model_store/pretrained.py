"""The seed's Python surface: ``from_pretrained`` (a ready model) and ``pipeline`` (images → top-k labels).

``from_pretrained`` never returns random weights: an unknown reference or a checkpoint that does not fit its
config is an error that says what is missing or what the store has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_store.card import WEIGHTS_FILE, Card
from model_store.errors import IntegrityError, ModelNotFound
from model_store.store import ModelStore
from model_store.weights import StateDict, check_weights, read_weights, sha256_file
from vit.config import DataConfig, ViTConfig, variant_names
from vit.labels import imagenet_1k_labels
from vit.model import VisionTransformer, create_model
from vit.preprocess import ImageSource, preprocess

TASK = "image_classification"
DEFAULT_TOP_K = 3  # the seed's pipeline default
_BATCH = 32  # images per forward pass inside a pipeline call


@dataclass(frozen=True)
class Pretrained:
    """An eval-mode model with its weights loaded, and the card that describes it."""

    model: VisionTransformer
    card: Card


def from_pretrained(ref_or_path: str | Path, *, store: ModelStore | None = None) -> Pretrained:
    """Build the model for a store reference or a local checkpoint.

    ``ref_or_path``: a store reference (``name``, ``name:7``, ``name@staging``; a variant name such as
    ``vit_base_p16`` is looked up as a model of that name), a directory holding ``model.ckpt`` and
    ``config.json`` (optionally ``data.json`` and ``labels.json``: what ``vitserve convert --out DIR``
    writes), or a ``.ckpt`` file with ``config.json`` beside it. ``store`` defaults to ``ModelStore()``.
    """
    from vit.checkpoint import load_state_dict

    path = Path(ref_or_path)
    looks_local = isinstance(ref_or_path, Path) or "/" in str(ref_or_path) or path.suffix == ".ckpt"
    # A bare name is a store reference unless a checkpoint folder of that name is right here.
    if path.is_file() or (path.is_dir() and (looks_local or (path / WEIGHTS_FILE).is_file())):
        state, card = _load_local(path)
    elif looks_local:
        raise ModelNotFound(f"no checkpoint at {path}")
    else:
        state, card = _load_from_store(str(ref_or_path), store or ModelStore())
    model = create_model(card.config)
    load_state_dict(model, state)
    model.set_train(False)
    return Pretrained(model=model, card=card)


def _load_from_store(ref: str, store: ModelStore) -> tuple[StateDict, Card]:
    try:
        return store.load(ref)
    except ModelNotFound as err:
        hint = ""
        if ref in variant_names():
            hint = f"; {ref!r} is an architecture, not weights: import them with `vitserve import SRC --name {ref}`"
        raise ModelNotFound(f"{err}{hint}") from err


def _load_local(path: Path) -> tuple[StateDict, Card]:
    """A ``convert --out`` directory or a ``.ckpt`` with ``config.json`` beside it → weights and a card."""
    folder, weights = (path, path / WEIGHTS_FILE) if path.is_dir() else (path.parent, path)
    config_path = folder / "config.json"
    for needed in (weights, config_path):
        if not needed.is_file():
            raise ModelNotFound(f"{path}: {needed.name} is missing (need model.ckpt and config.json)")
    config = ViTConfig.from_json(config_path.read_text(encoding="utf-8"))
    data_path, labels_path = folder / "data.json", folder / "labels.json"
    data = (
        DataConfig.from_dict(json.loads(data_path.read_text(encoding="utf-8")))
        if data_path.is_file()
        else DataConfig(img_size=config.img_size)
    )
    labels = (
        [str(x) for x in json.loads(labels_path.read_text(encoding="utf-8"))]
        if labels_path.is_file()
        else default_labels(config.num_classes)
    )
    try:
        state = read_weights(weights)
        check_weights(state, config)
    except ValueError as err:
        raise IntegrityError(f"{weights}: {err}") from err
    card = Card(
        name=folder.name,
        version=0,  # not a store version
        config=config,
        data=data,
        labels=labels,
        weights=weights.name,
        sha256=sha256_file(weights),
        lineage={"path": str(weights.resolve())},
    )
    return state, card


def default_labels(num_classes: int) -> list[str]:
    """ImageNet-1k names for a 1000-class head, otherwise the class indices as strings."""
    if num_classes == 1000:
        return list(imagenet_1k_labels())
    return [str(i) for i in range(num_classes)]


class ImageClassificationPipeline:
    """``pipe(images, top_k=3)`` → per image, ``[{"label", "index", "score"}, ...]`` sorted by score.

    ``images``: one image or a list of them; each a path, encoded bytes, a PIL image or an ``(H, W[, C])``
    uint8 array (a 4-D ``(B, H, W, C)`` array is a batch). Preprocessing is the card's ``DataConfig``.
    """

    def __init__(self, pretrained: Pretrained) -> None:
        self.model = pretrained.model
        self.card = pretrained.card

    def __call__(
        self, images: ImageSource | Sequence[ImageSource], top_k: int = DEFAULT_TOP_K
    ) -> list[list[dict[str, Any]]]:
        sources = _as_list(images)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(sources), _BATCH):
            batch = preprocess(sources[start : start + _BATCH], self.card.data)
            results += [self._top_k(row, top_k) for row in self.logits(batch)]
        return results

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 → ``(B, num_classes)`` float32 logits."""
        import mindspore as ms

        return np.asarray(self.model(ms.Tensor(batch)).asnumpy())

    def _top_k(self, logits: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        # Softmax in float64 so that small probabilities do not underflow and ties order stably.
        shifted = logits.astype(np.float64) - np.max(logits)
        probs = np.exp(shifted) / np.sum(np.exp(shifted))
        order = np.argsort(-probs, kind="stable")[:top_k]
        return [{"label": self.card.labels[i], "index": int(i), "score": float(probs[i])} for i in order]


def pipeline(
    task: str = TASK, model: str | Path | Pretrained = "", *, store: ModelStore | None = None
) -> ImageClassificationPipeline:
    """The seed's ``pipeline("image_classification", model=...)``: a callable from images to top-k labels."""
    if task.replace("-", "_") != TASK:
        raise ValueError(f"unsupported task {task!r}; supported: {TASK!r}")
    if not model:
        raise ValueError("pipeline needs model= (a store reference, a checkpoint directory or a Pretrained)")
    pretrained = model if isinstance(model, Pretrained) else from_pretrained(model, store=store)
    if not pretrained.card.config.num_classes:
        raise ValueError(f"{pretrained.card.ref}: the model has no classifier head (num_classes 0)")
    return ImageClassificationPipeline(pretrained)


def _as_list(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, list | tuple):
        return list(images)
    return [images]  # type: ignore[list-item]  # one path, bytes object or PIL image
