"""Alias and canary moves against gc and delete in another process, at the worst moment.

A move reads the target version's card and then writes the alias table. Another process's gc or delete runs
exactly there (started when this process has just read the card), and the test process goes on once that
process has finished or is waiting for the model's lock (seen in ``/proc/locks``). Whatever the order, no alias
and no canary may end up naming a version that is gone: either the move is refused cleanly (a ``StoreError``)
or the other process keeps the version (it is aliased by then, or refused).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.aliases import read_aliases
from vitserve.model_store.card import Card

REPO = Path(__file__).parents[2]  # the worker runs as tests.model_store.store_worker
WAIT_S = 120  # generous: several teammates share two cores
VICTIM = 2  # the version each move targets: unaliased, not the latest, held by no lease


def _blocked_on_lock(pid: int, lock: Path) -> bool:
    """True when process ``pid`` waits for the flock on ``lock`` (a ``->`` line of ``/proc/locks``)."""
    inode = str(os.stat(lock).st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[5] == str(pid) and fields[6].rsplit(":", 1)[-1] == inode:
            return True
    return False


class Interference:
    """Runs ``store_worker`` ``args`` in another process the first time this thread parses the victim's card."""

    def __init__(self, root: Path, args: list[str]) -> None:
        self.root, self.args = root, args
        self.proc: subprocess.Popen[str] | None = None

    def arm(self, monkeypatch: pytest.MonkeyPatch) -> None:
        parse = Card.from_json.__func__  # type: ignore[attr-defined]
        owner = threading.current_thread()

        def from_json(cls: type[Card], text: str) -> Card:
            card = parse(cls, text)
            if card.version == VICTIM and self.proc is None and threading.current_thread() is owner:
                self._run_until_done_or_blocked()
            return card

        monkeypatch.setattr(Card, "from_json", classmethod(from_json))

    def _run_until_done_or_blocked(self) -> None:
        args = [sys.executable, "-m", "tests.model_store.store_worker", str(self.root), *self.args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        lock = self.root / "tiny" / ".lock"
        deadline = time.monotonic() + WAIT_S
        while self.proc.poll() is None and not _blocked_on_lock(self.proc.pid, lock):
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"{self.args} neither finished nor waited for the model lock in {WAIT_S} s")
            time.sleep(0.01)

    def result(self) -> str:
        if self.proc is None:
            pytest.fail("the move never read the victim's card: the interference did not run")
        out, err = self.proc.communicate(timeout=WAIT_S)
        assert self.proc.returncode == 0, err[-2000:]
        return out


def _assert_every_alias_names_a_version(store: ModelStore) -> None:
    table = read_aliases(store.root / "tiny")
    existing = {card.version for card in store.versions("tiny")}
    assert table.aliased_versions() <= existing, (table, existing)
    for alias in table.aliases:
        store.resolve(f"tiny@{alias}")  # what a replica starting with tiny@alias does
    store.resolve("tiny")


def _set_staging(store: ModelStore) -> object:
    return store.set_alias("tiny", "staging", VICTIM)


def _promote(store: ModelStore) -> object:
    return store.set_alias("tiny", "production", VICTIM, dataset="val")


def _start_canary(store: ModelStore) -> object:
    return store.set_canary("tiny", "production", VICTIM, 10)


def _promote_canary(store: ModelStore) -> object:
    return store.end_canary("tiny", "production", promote=True, dataset="val")


MOVES: dict[str, tuple[Callable[[ModelStore], object], list[str]]] = {
    "staging-vs-gc": (_set_staging, ["gc", "tiny"]),
    "promote-vs-delete": (_promote, ["delete", f"tiny:{VICTIM}"]),
    "promote-vs-gc": (_promote, ["gc", "tiny"]),
    "canary-vs-gc": (_start_canary, ["gc", "tiny"]),
    "canary-promotion-vs-abort-and-gc": (_promote_canary, ["abort-gc", "tiny", "production"]),
}


@pytest.mark.parametrize("case", list(MOVES))
def test_no_move_names_a_version_that_gc_or_delete_removes_meanwhile(store, publish, monkeypatch, case):
    move, worker_args = MOVES[case]
    publish(top1=0.8, aliases=("production",))
    publish(top1=0.9)
    publish(top1=0.7)  # the latest: gc keeps it whatever happens
    if move is _promote_canary:
        store.set_canary("tiny", "production", VICTIM, 10)
    interference = Interference(store.root, worker_args)
    interference.arm(monkeypatch)
    try:
        move(store)
    except StoreError:
        pass  # refused cleanly: allowed, as long as nothing names a missing version
    finally:
        out = interference.result()
    _assert_every_alias_names_a_version(store)
    canary = store.canary("tiny", "production")
    if canary is not None:
        store.card("tiny", canary.version)
    removed = any(line.startswith("ok ") and f"tiny:{VICTIM}" in line for line in out.splitlines())
    if removed:  # the other process removed the victim first: then the move must not have named it
        assert VICTIM not in read_aliases(store.root / "tiny").aliased_versions(), out


def test_a_rollback_to_a_version_keeps_it_from_a_concurrent_gc(store, publish, monkeypatch):
    """A rollback picks its target and points the alias under the lock: gc in another process sees it aliased."""
    publish(top1=0.8, aliases=("production",))
    publish(top1=0.9)
    publish(top1=0.7)
    store.set_alias("tiny", "staging", VICTIM)
    store.set_alias("tiny", "staging", 3)  # staging's history: 2, then 3
    interference = Interference(store.root, ["gc", "tiny"])
    interference.arm(monkeypatch)
    rolled = store.rollback("tiny", "staging")
    out = interference.result()
    assert rolled.version == VICTIM
    _assert_every_alias_names_a_version(store)
    assert not any(line.startswith("ok ") and f"tiny:{VICTIM}" in line for line in out.splitlines()), out
