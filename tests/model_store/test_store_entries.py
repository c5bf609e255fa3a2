"""What a store entry may say: every file and record read back from the store is checked before it is used.

A card's weights name stays inside its version directory; labels hold no control characters (they become
lines of a Triton ``labels.txt``); a lease file that is not one is ignored with a warning and never crashes
gc or delete, nor makes gc remove a file of its choosing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest

from tests.tiny import LABELS
from vitserve.model_store import IntegrityError, StoreError


def _edit_card(store, version: int, **changes: object) -> None:
    path = store.root / "tiny" / str(version) / "card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# --- (a) the weights file is a plain name inside the version's directory ---------------------------------


@pytest.mark.parametrize("weights", ["../1/model.ckpt", "{root}/tiny/1/model.ckpt", "sub/model.ckpt", "..", ""])
def test_a_card_naming_weights_outside_its_version_is_refused(store, publish, weights):
    first = publish(seed=1)
    publish(seed=2)
    # The sha256 is the first version's, so the only thing wrong is where the file is.
    _edit_card(store, 2, weights=weights.format(root=store.root), sha256=first.sha256)
    for read in (store.verify, store.load, store.resolve):
        with pytest.raises(IntegrityError, match=r"tiny:2.*weights"):
            read("tiny:2")
    store.load("tiny:1")  # the version whose file it pointed at is untouched


def test_a_weights_symlink_leading_outside_the_version_is_refused(store, publish, tmp_path):
    card = publish()
    weights = store.version_dir(card) / card.weights
    outside = tmp_path / "elsewhere.ckpt"
    shutil.copyfile(weights, outside)  # the same bytes: only the link is wrong
    weights.unlink()
    weights.symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"tiny:1.*outside"):
        store.verify("tiny:1")
    with pytest.raises(IntegrityError, match=r"tiny:1.*outside"):
        store.load("tiny:1")


@pytest.mark.parametrize("sha256", ["../../../../escape", "", "A" * 64, "0" * 63])
def test_a_card_whose_sha256_is_not_a_digest_is_refused(store, publish, sha256):
    """The digest names the cached exports' files: a card holding ``../`` there would put them anywhere."""
    publish()
    _edit_card(store, 1, sha256=sha256)
    with pytest.raises(IntegrityError, match=r"tiny:1.*sha256"):
        store.resolve("tiny:1")


# --- (b) labels hold no control characters --------------------------------------------------------------


@pytest.mark.parametrize("label", ["cat\ndog", "cat\r", "tab\there", "nul\x00", "line\u2028sep", "nel\x85"])
def test_publish_refuses_a_label_with_a_control_character(store, publish, label):
    labels = [*LABELS[:-1], label]
    with pytest.raises(StoreError, match=r"label 9 .*control character"):
        publish(labels=labels)
    assert store.list_models() == []  # refused before anything was written


def test_a_stored_label_with_a_control_character_is_refused_on_read(store, publish):
    publish()
    _edit_card(store, 1, labels=[*LABELS[:-1], "nine\nten"])
    with pytest.raises(IntegrityError, match=r"tiny:1.*label 9 .*control character"):
        store.resolve("tiny")


@pytest.mark.parametrize("labels", [[*LABELS[:-1], 9], "0123456789", [*LABELS[:-1], ["x"]]])
def test_stored_labels_that_are_not_strings_are_refused_on_read(store, publish, labels):
    publish()
    _edit_card(store, 1, labels=labels)
    with pytest.raises(IntegrityError, match=r"tiny:1.*labels"):
        store.resolve("tiny:1")


# --- (c) lease files are parsed strictly -----------------------------------------------------------------


def _lease(store, replica: str, text: str) -> None:
    folder = store.root / ".leases"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{replica}.json").write_text(text)


def _record(replica: str, holds: object, expires_in_s: float = 60.0, **changes: object) -> str:
    now = time.time()
    raw = {"replica": replica, "host": "h", "pid": 1, "renewed_at": now, "expires_at": now + expires_in_s}
    return json.dumps({**raw, "holds": holds, **changes})


MALFORMED = {
    "non-ascii-digit": _record("r", ["tiny:²"]),
    "not-json": "{holds: tiny:2",
    "holds-a-string": _record("r", "tiny:2"),
    "holds-a-number": _record("r", [2]),
    "expiry-a-string": _record("r", ["tiny:2"], expires_at="soon"),
    "expiry-infinite": _record("r", ["tiny:2"], expires_at=float("inf")),
    "expiry-absurd": _record("r", ["tiny:2"], expires_at=time.time() + 1e12),
    "expiry-negative": _record("r", ["tiny:2"], expires_at=-5.0),
    "expiry-a-bool": _record("r", ["tiny:2"], expires_at=True),
    "not-an-object": json.dumps(["tiny:2"]),
    "replica-not-the-file": _record("someone-else", ["tiny:2"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_lease_is_ignored_with_a_warning_and_never_crashes_gc_or_delete(store, publish, caplog, case):
    publish(aliases=("production",))
    publish()
    publish()
    _lease(store, "r", MALFORMED[case])
    with caplog.at_level(logging.WARNING, logger="vitserve.model_store.leases"):
        assert store.held("tiny") == {}  # not a lease: it holds nothing
        assert store.delete("tiny:2").version == 2
    assert "lease" in caplog.text
    assert store.gc("tiny") == []


def test_a_bad_hold_is_dropped_but_the_lease_still_holds_its_good_ones(store, publish, caplog):
    publish(aliases=("production",))
    publish()
    publish()
    _lease(store, "r", _record("r", ["tiny:²", "tiny:2", "../x:1", "tiny:0"]))
    with caplog.at_level(logging.WARNING, logger="vitserve.model_store.leases"):
        assert store.held("tiny") == {2: ["r"]}
    assert "tiny:²" in caplog.text
    assert store.gc("tiny") == []  # 1 aliased, 2 held, 3 the latest


def test_gc_never_removes_a_file_a_lease_names_as_its_replica(store, publish):
    """gc removed expired leases by the replica id inside them: ``../tiny/1/card`` was ``tiny:1``'s card."""
    publish(aliases=("production",))
    publish()
    _lease(store, "old", _record("../tiny/1/card", ["tiny:1"], expires_in_s=-10 * 3600))
    store.gc("tiny")
    assert (store.root / "tiny" / "1" / "card.json").is_file()
    store.resolve("tiny:1")


def test_a_replica_cannot_write_a_lease_its_readers_would_ignore(store):
    with pytest.raises(StoreError, match="name:V"):
        store.leases.renew("r", ["tiny:²"], ttl_s=60)
    with pytest.raises(ValueError, match="lease TTL"):
        store.leases.renew("r", ["tiny:1"], ttl_s=1e9)
    lease = store.leases.renew("r", (ref for ref in ["tiny:1", "tiny:2"]), ttl_s=60)  # any iterable
    assert lease.holds == ("tiny:1", "tiny:2") and store.leases.all() == [lease]
