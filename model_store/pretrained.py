"""``from_pretrained``: a ready MindSpore model for a store reference or a local checkpoint (the seed's surface;
``pipeline`` is in ``vitserve.runtime.pipeline``).

``from_pretrained`` never returns random weights: an unknown reference or a checkpoint that does not fit its
config is an error that says what is missing or what the store has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vitserve.model_store.card import WEIGHTS_FILE, Card
from vitserve.model_store.errors import IntegrityError, ModelNotFound
from vitserve.model_store.store import ModelStore
from vitserve.model_store.weights import check_weights
from vitserve.vit.checkpoint import StateDict, load_checkpoint_file
from vitserve.vit.config import DataConfig, ViTConfig, variant_names
from vitserve.vit.files import sha256_file
from vitserve.vit.labels import imagenet_1k_labels
from vitserve.vit.model import VisionTransformer, create_model


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
    from vitserve.vit.checkpoint import load_state_dict

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
        state = load_checkpoint_file(weights)
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
