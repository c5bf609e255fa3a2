"""Figures kept inside a version's directory (confusion matrices), named and found here, nowhere else.

A confusion-matrix picture of ``name:version`` evaluated on ``dataset`` is ``confusion_<dataset>.png`` next to
the version's card. Readers never join a caller's text onto a path: ``confusion_images`` lists what exists and
a lookup is a key in that listing, so a dataset name such as ``../../etc/passwd`` can only miss.
"""

from __future__ import annotations

import re
from pathlib import Path

from vitserve.model_store.card import Card
from vitserve.model_store.errors import ModelNotFound
from vitserve.model_store.store import ModelStore

_CONFUSION = re.compile(r"confusion_(?P<dataset>[^/\\]{1,200})\.png")


def confusion_path(store: ModelStore, card: Card, dataset: str) -> Path:
    """Where the confusion-matrix PNG of ``card`` on ``dataset`` is written (by the evaluator and trainer).

    ``dataset`` comes from the operator (a folder name or ``--dataset``), never from an HTTP client."""
    return store.version_dir(card) / f"confusion_{dataset}.png"


def confusion_images(store: ModelStore, card: Card) -> dict[str, Path]:
    """``dataset`` → PNG path for every confusion matrix stored with ``card``'s version (regular files only)."""
    folder = store.version_dir(card)
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _CONFUSION.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink():
            found[match["dataset"]] = path
    return dict(sorted(found.items()))


def confusion_image(store: ModelStore, name: str, version: int, dataset: str) -> Path:
    """The stored confusion matrix of ``name:version`` on ``dataset``; ``ModelNotFound`` naming what exists."""
    card = store.card(name, version)
    images = confusion_images(store, card)
    if dataset not in images:
        have = ", ".join(images) or "none"
        raise ModelNotFound(f"{card.ref} has no confusion matrix for {dataset!r}; stored: {have}")
    return images[dataset]
