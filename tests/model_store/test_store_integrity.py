"""Loading verifies: a flipped byte, a missing file or a card that does not fit the weights names the version."""

from __future__ import annotations

import json

import pytest

from vitserve.model_store import IntegrityError


def _flip_byte(path, offset_from_end=100):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_is_an_integrity_error_naming_the_version(store, publish):
    publish()
    publish()
    _flip_byte(store.root / "tiny" / "2" / "model.ckpt")
    with pytest.raises(IntegrityError, match=r"tiny:2: sha256 mismatch"):
        store.load("tiny")
    with pytest.raises(IntegrityError, match=r"tiny:2"):
        store.verify("tiny:2")
    store.load("tiny:1")  # the other version is untouched


def test_a_missing_weights_file_names_the_version(store, publish):
    publish()
    (store.root / "tiny" / "1" / "model.ckpt").unlink()
    with pytest.raises(IntegrityError, match=r"tiny:1: weights file model.ckpt is missing"):
        store.load("tiny:1")


def test_a_card_that_does_not_fit_the_weights_is_refused(store, publish):
    publish()
    card_path = store.root / "tiny" / "1" / "card.json"
    raw = json.loads(card_path.read_text())
    raw["config"]["num_classes"] = 5  # the weights have a 10-class head
    raw["labels"] = raw["labels"][:5]
    card_path.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match=r"tiny:1: weights do not match the card.*head.weight"):
        store.load("tiny:1")


def test_a_damaged_card_names_the_version(store, publish):
    publish()
    (store.root / "tiny" / "1" / "card.json").write_text("{not json")
    with pytest.raises(IntegrityError, match=r"tiny:1: cannot read model card"):
        store.resolve("tiny:1")


def test_publish_refuses_weights_that_do_not_fit_the_config(store, publish, tiny_config, tiny_data):
    from tests.tiny import random_state

    state = random_state(0)
    del state["head.bias"]
    state["pos_embed"] = state["pos_embed"][:, :5]
    with pytest.raises(IntegrityError, match=r"cannot publish tiny: .*missing keys: head.bias.*pos_embed"):
        store.publish("tiny", state, tiny_config, tiny_data, [str(i) for i in range(10)], lineage={})
    assert store.list_models() == []
    assert not (store.root / "tiny").exists()  # refused before anything was written
