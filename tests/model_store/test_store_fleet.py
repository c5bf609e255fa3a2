"""What a fleet of replicas needs of the store: canaries in the alias table, leases, a cheap generation."""

from __future__ import annotations

import time

import pytest

from vitserve.model_store import AliasedVersion, ModelNotFound, PromotionRefused, StoreError, VersionHeld


def test_a_canary_is_kept_beside_its_alias_and_ends_by_promotion_or_abort(store, publish):
    publish(top1=0.9, aliases=("production",))
    publish(top1=0.95)
    publish(top1=0.5)
    canary = store.set_canary("tiny", "production", 2, 10)
    assert (canary.version, canary.weight) == (2, 10.0)
    assert store.canary("tiny", "production") == canary
    assert store.aliases("tiny") == {"production": 1}  # the alias still names the stable version
    assert store.resolve("tiny").version == 1
    with pytest.raises(AliasedVersion, match="aliased"):  # a canary's version is as protected as an alias's
        store.delete("tiny:2")
    assert "tiny:2" not in store.gc("tiny")
    store.end_canary("tiny", "production", promote=True)
    assert store.aliases("tiny") == {"production": 2} and store.canary("tiny", "production") is None
    store.set_canary("tiny", "production", 3, 50)
    with pytest.raises(PromotionRefused):  # promoting a canary is a promotion: the eval gate applies
        store.end_canary("tiny", "production", promote=True)
    with pytest.raises(StoreError, match="now 3, not 1"):
        store.end_canary("tiny", "production", promote=False, only_version=1)
    assert store.end_canary("tiny", "production", promote=False).version == 3
    assert store.aliases("tiny") == {"production": 2} and store.canary("tiny", "production") is None
    with pytest.raises(ModelNotFound, match="no canary"):
        store.end_canary("tiny", "production", promote=False)


def test_canary_refusals_and_what_clears_one(store, publish):
    publish(aliases=("production",))
    publish()
    with pytest.raises(ValueError, match="between 0 and 100"):
        store.set_canary("tiny", "production", 2, 100)
    with pytest.raises(StoreError, match="already points at 1"):
        store.set_canary("tiny", "production", 1, 10)
    with pytest.raises(ModelNotFound, match="no alias 'staging'"):
        store.set_canary("tiny", "staging", 2, 10)
    store.set_canary("tiny", "production", 2, 10)
    store.set_alias("tiny", "production", 2)  # moving the alias to the canary's version ends it
    assert store.canary("tiny", "production") is None
    store.set_canary("tiny", "production", 1, 10)
    store.rollback("tiny")  # a rollback ends the canary too
    assert store.canary("tiny", "production") is None and store.aliases("tiny") == {"production": 1}


def test_a_live_lease_refuses_delete_and_gc_keeps_what_it_holds(store, publish):
    publish(aliases=("production",))
    publish()
    publish()
    store.leases.renew("replica-a", ["tiny:1", "tiny:2"], ttl_s=60)
    with pytest.raises(VersionHeld, match=r"tiny:2 is loaded by running replica\(s\): replica-a"):
        store.delete("tiny:2")
    assert store.held("tiny") == {1: ["replica-a"], 2: ["replica-a"]}
    assert store.gc("tiny") == []  # 1 aliased, 2 held, 3 the latest
    store.leases.renew("replica-a", ["tiny:1"], ttl_s=60)  # it unloaded 2
    assert store.delete("tiny:2").version == 2


def test_an_expired_lease_holds_nothing_and_a_released_one_is_gone(store, publish):
    publish(aliases=("production",))
    publish()
    publish()
    store.leases.renew("killed", ["tiny:2"], ttl_s=0.2)
    store.leases.renew("stopped", ["tiny:3"], ttl_s=60)
    assert store.held("tiny") == {2: ["killed"], 3: ["stopped"]}
    time.sleep(0.3)
    store.leases.release("stopped")
    assert store.held("tiny") == {}
    assert store.delete("tiny:2").version == 2
    assert [lease.replica for lease in store.leases.all()] == ["killed"]  # expired, kept until gc's grace


def test_the_generation_changes_with_aliases_and_versions_only(store, publish):
    publish(aliases=("production",))
    before = store.generation("tiny")
    assert store.generation("tiny") == before
    store.record_metrics("tiny:1", "val", {"top1": 0.5})  # a card update is not a fleet change
    assert store.generation("tiny") == before
    publish()
    after_publish = store.generation("tiny")
    assert after_publish != before
    store.set_alias("tiny", "production", 2)
    assert store.generation("tiny") != after_publish
