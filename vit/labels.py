"""Class names shipped with the library: the 1000 ImageNet-1k short names in index order.

The names come from ``imagenet_1k_labels.json`` beside this module, generated once from torchvision's
``_IMAGENET_CATEGORIES`` (read as text, never imported) with its two disambiguations undone, so that the
list matches the seed's and the WordNet first lemmas: ``crane`` at 134 and 517, ``maillot`` at 638 and 639.
Names repeat, which is why predictions always carry the class index as well.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

_DATA_FILE = "imagenet_1k_labels.json"


@cache
def imagenet_1k_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k short class names, index ``i`` → name (read once, then cached)."""
    text = resources.files("vitserve.vit").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    names = json.loads(text)
    if not (isinstance(names, list) and len(names) == 1000 and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{_DATA_FILE} is damaged: expected a list of 1000 class names")
    return tuple(names)


def __getattr__(name: str) -> list[str]:
    # ``IMAGENET_1K_LABELS`` is read lazily on first use: nothing happens at import.
    if name == "IMAGENET_1K_LABELS":
        return list(imagenet_1k_labels())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
