"""Stored figures: named by the store, listed from what exists, looked up by key (never joined onto a path)."""

from __future__ import annotations

import pytest

from tests.tiny import publish_tiny
from vitserve.model_store import ModelNotFound, ModelStore
from vitserve.model_store.figures import confusion_image, confusion_images, confusion_path


def test_confusion_images_are_found_by_dataset(store: ModelStore) -> None:
    card = publish_tiny(store)
    assert confusion_images(store, card) == {}
    for dataset in ("val", "digits-val@int8"):
        confusion_path(store, card, dataset).write_bytes(b"png")
    (store.version_dir(card) / "confusion_.png").write_bytes(b"no dataset")
    (store.version_dir(card) / "confusion_x.jpg").write_bytes(b"not a png")
    assert list(confusion_images(store, card)) == ["digits-val@int8", "val"]
    assert confusion_image(store, "tiny", 1, "val") == store.version_dir(card) / "confusion_val.png"


def test_an_unknown_dataset_names_what_exists(store: ModelStore) -> None:
    card = publish_tiny(store)
    confusion_path(store, card, "val").write_bytes(b"png")
    for dataset in ("test", "../card", "../../tiny/1/card.json", "val.png"):
        with pytest.raises(ModelNotFound, match="stored: val"):
            confusion_image(store, "tiny", 1, dataset)
    with pytest.raises(ModelNotFound):
        confusion_image(store, "tiny", 2, "val")
