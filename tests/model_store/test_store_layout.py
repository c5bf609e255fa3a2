"""Layout on disk, cards, version numbering and reference resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitserve.model_store import InvalidName, ModelNotFound, ModelStore
from vitserve.model_store.reference import Reference, parse_reference
from vitserve.model_store.store import ROOT_ENV, default_root
from vitserve.vit.files import sha256_file


def test_publish_writes_the_documented_layout_and_card(store, publish, tiny_config, tiny_data):
    card = publish("tiny", seed=1, top1=0.5, description="first", aliases=("staging",))
    version_dir = store.root / "tiny" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["card.json", "model.ckpt"]
    on_disk = json.loads((version_dir / "card.json").read_text())
    assert on_disk["name"] == "tiny" and on_disk["version"] == 1
    assert on_disk["sha256"] == sha256_file(version_dir / "model.ckpt") == card.sha256
    assert on_disk["config"] == tiny_config.to_dict()
    assert on_disk["data"]["crop_pct"] == tiny_data.crop_pct
    assert on_disk["labels"] == [f"class{i}" for i in range(10)]
    assert on_disk["lineage"] == {"seed": 1} and on_disk["metrics"] == {"val": {"top1": 0.5}}
    assert on_disk["created_at"].endswith("+00:00") and on_disk["description"] == "first"
    assert json.loads((store.root / "tiny" / "aliases.json").read_text())["aliases"] == {"staging": 1}
    assert store.version_dir(card) == version_dir


def test_load_returns_the_published_weights(store, publish):
    from tests.tiny import random_state

    publish("tiny", seed=3)
    state, card = store.load("tiny:1")
    expected = random_state(3)
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value)
    assert card.ref == "tiny:1"


def test_versions_grow_and_are_never_reused(store, publish):
    assert [publish().version for _ in range(3)] == [1, 2, 3]
    store.delete("tiny:3")
    store.delete("tiny:2")
    assert publish().version == 4  # 2 and 3 were deleted; their numbers stay used
    assert [c.version for c in store.versions("tiny")] == [1, 4]
    assert store.list_models() == ["tiny"]


def test_resolution_production_else_latest_version_and_alias(store, publish):
    publish()
    publish()
    assert store.resolve("tiny").version == 2  # no production alias: the latest
    store.set_alias("tiny", "production", 1)
    store.set_alias("tiny", "staging", 2)
    assert store.resolve("tiny").version == 1  # production wins over latest
    assert store.resolve("tiny:2").version == 2
    assert store.resolve("tiny@staging").version == 2
    assert store.aliases("tiny") == {"production": 1, "staging": 2}


def test_unknown_references_say_what_exists(store, publish):
    publish("tiny")
    with pytest.raises(ModelNotFound, match=r"'nope' not found.*models: tiny"):
        store.resolve("nope")
    with pytest.raises(ModelNotFound, match=r"tiny:7 not found; versions of 'tiny': 1"):
        store.resolve("tiny:7")
    with pytest.raises(ModelNotFound, match=r"no alias 'gold'.*aliases: none"):
        store.resolve("tiny@gold")
    with pytest.raises(ModelNotFound):
        store.versions("nope")


@pytest.mark.parametrize("bad", ["../evil", "Tiny", ".hidden", "a/b", "", "x" * 65, "tiny:0", "tiny:x", "tiny@"])
def test_invalid_names_and_references_are_refused(store, bad):
    with pytest.raises(InvalidName):
        store.resolve(bad)


def test_publish_refuses_a_path_traversal_name(store, publish, tmp_path):
    with pytest.raises(InvalidName):
        publish("../outside")
    assert not (tmp_path / "outside").exists()


def test_parse_reference():
    assert parse_reference("vit-b") == Reference("vit-b")
    assert parse_reference("vit-b:12") == Reference("vit-b", version=12)
    assert parse_reference("vit_b.v2@staging") == Reference("vit_b.v2", alias="staging")
    assert str(parse_reference("vit-b@prod")) == "vit-b@prod"


def test_staging_leftovers_and_empty_models_are_invisible(store, publish):
    publish("tiny")
    (store.root / "tiny" / ".staging-deadbeef").mkdir()
    (store.root / "tiny" / ".staging-deadbeef" / "model.ckpt").write_bytes(b"partial")
    (store.root / "empty").mkdir()
    (store.root / "tiny" / "17").mkdir()  # a number without a card is not a version
    assert store.list_models() == ["tiny"]
    assert [c.version for c in store.versions("tiny")] == [1]


def test_record_metrics_merges_into_the_card(store, publish):
    publish("tiny", top1=0.5, dataset="val")
    store.record_metrics("tiny:1", "test", {"top1": 0.25, "top5": 0.75})
    card = store.resolve("tiny")
    assert card.metrics == {"val": {"top1": 0.5}, "test": {"top1": 0.25, "top5": 0.75}}
    store.verify("tiny:1")  # the card changed, the weights did not


def test_default_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    assert ModelStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv(ROOT_ENV)
    assert ModelStore().root.as_posix() == "store"


def test_publish_refuses_labels_that_do_not_fit_the_head(store, tiny_config, tiny_data):
    from tests.tiny import random_state

    with pytest.raises(ValueError, match="3 labels for a head of 10 classes"):
        store.publish("tiny", random_state(0), tiny_config, tiny_data, ["a", "b", "c"], lineage={})
    assert store.list_models() == []
