"""Per-version serving options: ``Card.serving`` on disk, old cards without it, and ``set_serving``."""

from __future__ import annotations

import json

import pytest

from vitserve.model_store import Card, IntegrityError, ModelNotFound


def test_serving_round_trips_through_card_json(publish, store):
    card = publish()
    assert card.serving == {}
    assert "serving" not in json.loads(card.to_json())  # unset: the card stays readable by older releases
    opted = card.replace(serving={"precision": "int8"})
    assert Card.from_json(opted.to_json()) == opted
    assert json.loads(opted.to_json())["serving"] == {"precision": "int8"}


def test_a_card_written_before_serving_existed_still_loads(publish, store):
    card = publish(top1=0.5)
    path = store.version_dir(card) / "card.json"
    raw = json.loads(path.read_text())
    raw.pop("serving", None)
    path.write_text(json.dumps(raw))
    old = store.resolve(card.ref)
    assert old.serving == {} and old.metrics == {"val": {"top1": 0.5}} and old.sha256 == card.sha256
    raw["serving"] = ["int8"]
    path.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="serving must be an object"):
        store.resolve(card.ref)


def test_set_serving_persists_merges_and_keeps_other_fields(publish, store):
    publish(top1=0.5)
    publish()
    store.set_alias("tiny", "production", 1)
    card = store.set_serving("tiny", precision="int8")  # "tiny" resolves to production: version 1
    assert card.ref == "tiny:1" and card.serving == {"precision": "int8"}
    store.record_metrics("tiny:1", "val@int8", {"top1_agreement": 1.0})  # a later card update keeps the option
    on_disk = store.card("tiny", 1)
    assert on_disk.serving == {"precision": "int8"} and on_disk.metrics["val"] == {"top1": 0.5}
    assert store.card("tiny", 2).serving == {}
    assert store.set_serving("tiny:1", precision="fp32").serving == {"precision": "fp32"}


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"precision": "fp16"}, "choose one of: fp32, int8, int8-static, bf16"),
     ({"threads": "2"}, "unknown serving option 'threads'"), ({}, "no serving option")],
)  # fmt: skip
def test_set_serving_refuses_what_it_does_not_know(publish, store, options, fragment):
    card = publish()
    before = (store.version_dir(card) / "card.json").read_bytes()
    with pytest.raises(ValueError, match=fragment) as info:
        store.set_serving(card.ref, **options)
    assert "tiny:1" in str(info.value)
    assert (store.version_dir(card) / "card.json").read_bytes() == before
    with pytest.raises(ModelNotFound):
        store.set_serving("tiny:9", precision="int8")
