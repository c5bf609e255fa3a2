"""Aliases: eval-gated promotion, rollback, delete and gc."""

from __future__ import annotations

import json
import os

import pytest

from vitserve.model_store import AliasedVersion, InvalidName, PromotionRefused, StoreError
from vitserve.model_store.locking import hold_lock


def test_promotion_below_production_is_refused_with_both_numbers(store, publish):
    publish(top1=0.91, dataset="digits-val", aliases=("production",))
    publish(top1=0.87, dataset="digits-val")
    with pytest.raises(PromotionRefused, match=r"0\.8700.*below tiny:1's 0\.9100") as refused:
        store.set_alias("tiny", "production", 2, dataset="digits-val")
    assert (refused.value.candidate, refused.value.current) == (0.87, 0.91)
    assert store.aliases("tiny") == {"production": 1}
    with pytest.raises(PromotionRefused):  # without --dataset every common data set is compared
        store.set_alias("tiny", "production", 2)
    store.set_alias("tiny", "production", 2, force=True)
    assert store.resolve("tiny").version == 2


def test_promotion_at_or_above_production_goes_ahead(store, publish):
    publish(top1=0.80, aliases=("production",))
    publish(top1=0.80)
    publish(top1=0.95)
    store.set_alias("tiny", "production", 2, dataset="val")  # equal is not below
    store.set_alias("tiny", "production", 3, dataset="val")
    assert store.aliases("tiny")["production"] == 3


def test_a_named_dataset_the_candidate_was_not_evaluated_on_is_refused(store, publish):
    publish(top1=0.8, dataset="val", aliases=("production",))
    publish(top1=0.9, dataset="other")
    with pytest.raises(PromotionRefused, match=r"no recorded top1 on 'val'"):
        store.set_alias("tiny", "production", 2, dataset="val")
    store.set_alias("tiny", "production", 2)  # nothing in common to compare


def test_other_aliases_are_not_gated(store, publish):
    publish(top1=0.9, aliases=("production", "staging"))
    publish(top1=0.1)
    store.set_alias("tiny", "staging", 2, dataset="val")
    assert store.aliases("tiny") == {"production": 1, "staging": 2}


def test_publish_with_production_alias_is_gated_and_publishes_nothing_when_refused(store, publish):
    publish(top1=0.9, aliases=("production",))
    with pytest.raises(PromotionRefused):
        publish(top1=0.5, aliases=("production",))
    assert [c.version for c in store.versions("tiny")] == [1]
    assert publish(top1=0.95, aliases=("production",)).version == 2


def test_rollback_walks_back_through_the_alias_history(store, publish):
    for _ in range(3):
        publish()
    store.set_alias("tiny", "production", 1)
    store.set_alias("tiny", "production", 2)
    store.set_alias("tiny", "production", 3)
    assert store.rollback("tiny").version == 2
    assert store.rollback("tiny").version == 1
    with pytest.raises(StoreError, match=r"tiny@production: no earlier version"):
        store.rollback("tiny")
    raw = json.loads((store.root / "tiny" / "aliases.json").read_text())
    assert raw["aliases"] == {"production": 1}


def test_rollback_skips_deleted_versions(store, publish):
    for _ in range(3):
        publish()
    for version in (1, 2, 3):
        store.set_alias("tiny", "production", version)
    store.set_alias("tiny", "staging", 3)
    store.set_alias("tiny", "production", 3)
    store.delete("tiny:2")
    assert store.rollback("tiny").version == 1


def test_delete_refuses_an_aliased_version_and_needs_an_explicit_version(store, publish):
    publish(aliases=("production",))
    publish()
    with pytest.raises(AliasedVersion, match=r"tiny:1 is aliased as production"):
        store.delete("tiny:1")
    with pytest.raises(InvalidName, match="explicit version"):
        store.delete("tiny")
    assert store.delete("tiny:2").version == 2
    assert [c.version for c in store.versions("tiny")] == [1]
    assert not any(p.name.startswith(".trash") for p in (store.root / "tiny").iterdir())


def test_gc_keeps_aliased_versions_and_the_latest(store, publish):
    for _ in range(5):
        publish()
    store.set_alias("tiny", "production", 2)
    store.set_alias("tiny", "staging", 4)
    assert store.gc("tiny") == ["tiny:1", "tiny:3"]
    assert [c.version for c in store.versions("tiny")] == [2, 4, 5]
    assert store.gc("tiny") == []


def test_gc_removes_dead_leftovers_but_not_a_live_publish(store, publish):
    publish()
    model_dir = store.root / "tiny"
    dead = model_dir / ".staging-dead"
    dead.mkdir()
    (model_dir / ".staging-dead.lock").touch()  # its owner died: nobody holds the lock
    live = model_dir / ".staging-live"
    live.mkdir()
    owner = hold_lock(model_dir / ".staging-live.lock")  # a publisher still writing
    (model_dir / ".trash-3-abc").mkdir()
    (model_dir / ".aliases.json.123.tmp").write_text("{")
    (model_dir / "1" / ".card.json.123.tmp").write_text("{")
    try:
        removed = store.gc("tiny")
    finally:
        os.close(owner)
    assert sorted(removed) == [".aliases.json.123.tmp", ".staging-dead", ".trash-3-abc", "1/.card.json.123.tmp"]
    assert live.is_dir() and not dead.exists()
    assert [c.version for c in store.versions("tiny")] == [1]
