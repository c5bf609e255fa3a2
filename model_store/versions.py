"""A model's version directories: which exist, each one's card and weights file, and the model's lock.

Plain functions of the store root, read by ``ModelStore`` and by its alias moves (``model_store.aliases``)
alike, so neither reaches into the other's internals. ``model_lock`` is the one lock of a model: publish claims
a number, gc and delete remove versions, and every alias, canary and card change checks and writes, all while
holding it. So a version found under the lock is still there when the change that checked it is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from vitserve.model_store.card import CARD_FILE, Card, read_card
from vitserve.model_store.errors import IntegrityError, InvalidName, ModelNotFound
from vitserve.model_store.locking import exclusive_lock
from vitserve.model_store.reference import validate_name

LOCK_FILE = ".lock"


@contextlib.contextmanager
def model_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``name``'s lock for the block (its directory must exist: ``require_numbers`` first, or publish)."""
    with exclusive_lock(root / validate_name(name) / LOCK_FILE):
        yield


def version_numbers(root: Path, name: str) -> list[int]:
    """The published versions of ``name``, ascending: directories named by ASCII digits that hold a card."""
    model_dir = root / validate_name(name)
    if not model_dir.is_dir():
        return []
    # ASCII only: str.isdigit() is also true of '²', which int() refuses.
    numbers = (p.name for p in model_dir.iterdir() if p.name.isascii() and p.name.isdigit())
    return sorted(int(n) for n in numbers if (model_dir / n / CARD_FILE).is_file())


def model_names(root: Path) -> list[str]:
    """Names that have at least one published version, sorted."""
    if not root.is_dir():
        return []
    names = (p.name for p in root.iterdir() if p.is_dir() and _is_valid_name(p.name))
    return sorted(name for name in names if version_numbers(root, name))


def require_numbers(root: Path, name: str) -> list[int]:
    """``version_numbers``, or ``ModelNotFound`` listing the models there are when ``name`` has none."""
    numbers = version_numbers(root, name)
    if not numbers:
        have = ", ".join(model_names(root)) or "none"
        raise ModelNotFound(f"model {name!r} not found; models: {have}")
    return numbers


def read_version_card(root: Path, name: str, version: int) -> Card:
    """The card of ``name:version`` (``ModelNotFound`` if absent, ``IntegrityError`` if it cannot be trusted)."""
    path = root / validate_name(name) / str(int(version)) / CARD_FILE
    if not path.is_file():
        have = ", ".join(str(v) for v in version_numbers(root, name)) or "none"
        raise ModelNotFound(f"{name}:{version} not found; versions of {name!r}: {have}")
    try:
        card = read_card(path)
    except ValueError as err:
        raise IntegrityError(f"{name}:{version}: {err}") from err
    if card.name != name or card.version != int(version):
        raise IntegrityError(f"{name}:{version}: its card says {card.ref}")
    return card


def weights_path(root: Path, card: Card) -> Path:
    """``card``'s weights file, which must lie in its version's directory itself (``IntegrityError`` otherwise:
    a card is a store entry, and a name such as ``../1/model.ckpt`` or a symlink would read another file)."""
    folder = root / card.name / str(card.version)
    path = folder / card.weights
    if path.parent != folder or card.weights in ("", ".", ".."):  # read_card checks too; a Card may be built
        raise IntegrityError(f"{card.ref}: weights {card.weights!r} is not a file name inside {folder}")
    if path.is_symlink() and path.resolve().parent != folder.resolve():
        raise IntegrityError(f"{card.ref}: weights {card.weights} is a symlink leading outside {folder}")
    return path


def _is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True
