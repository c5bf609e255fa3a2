"""Atomic publish under a real SIGKILL, and real concurrent publishers (separate processes)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.tiny import random_state
from vitserve.model_store import ModelStore
from vitserve.model_store.store import PAUSE_ENV

REPO = Path(__file__).parents[2]  # the worker runs as tests.model_store.publish_worker
STAGES = ["staging", "weights", "verified", "card", "claimed"]
WAIT_S = 240  # generous: several teammates share two cores


def _start_worker(root: Path, name: str, count: int, seed: int, alias: str | None = None, **env: str):
    args = [sys.executable, "-m", "tests.model_store.publish_worker", str(root), name, str(count), str(seed)]
    args += [alias] if alias else []
    return subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def _wait_for_line(proc: subprocess.Popen, stream: str, marker: str) -> None:
    """Read ``proc``'s stdout/stderr until a line contains ``marker`` (fail if it exits or times out)."""
    pipe = getattr(proc, stream)
    deadline = time.monotonic() + WAIT_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 1.0)
        if not ready:
            continue
        line = pipe.readline()
        if not line:
            proc.wait()
            pytest.fail(f"worker exited ({proc.returncode}) before {marker!r}: {''.join(seen)[-2000:]}")
        seen.append(line)
        if marker in line:
            return
    proc.kill()
    pytest.fail(f"worker did not reach {marker!r} within {WAIT_S} s")


@pytest.mark.slow
def test_a_publish_killed_at_every_stage_leaves_no_partial_version(tmp_path):
    root = tmp_path / "store"
    store = ModelStore(root)
    labels = [str(i) for i in range(10)]
    from tests.tiny import TINY, TINY_DATA

    for stage in STAGES:  # one good version each, then a publisher killed at that stage
        store.publish(f"m-{stage}", random_state(0), TINY, TINY_DATA, labels, lineage={}, aliases=["production"])
    procs = {stage: _start_worker(root, f"m-{stage}", 1, 7, "production", **{PAUSE_ENV: stage}) for stage in STAGES}
    try:
        for stage, proc in procs.items():
            _wait_for_line(proc, "stderr", f"paused at {stage}")
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()

    for stage in STAGES:
        name = f"m-{stage}"
        claimed = stage == "claimed"  # killed after the rename: the version is whole, its alias not yet moved
        assert [c.version for c in store.versions(name)] == ([1, 2] if claimed else [1]), stage
        for card in store.versions(name):
            store.load(card.ref)  # every visible version verifies
        assert store.aliases(name) == {"production": 1}
        json.loads((root / name / "aliases.json").read_text())
        # The next publish works (the killed holder's locks are gone) and takes a fresh number.
        card = store.publish(name, random_state(1), TINY, TINY_DATA, labels, lineage={}, aliases=["production"])
        assert card.version == (3 if claimed else 2)
        assert store.resolve(name).version == card.version
        leftovers = [r for r in store.gc(name) if r.startswith(".staging-")]
        assert len(leftovers) == (0 if claimed else 1), (stage, leftovers)
        assert not [p for p in (root / name).iterdir() if p.name.startswith(".staging-")]


@pytest.mark.slow
def test_two_processes_publishing_at_once_get_distinct_versions_and_lose_nothing(tmp_path):
    root = tmp_path / "store"
    go = tmp_path / "go"
    count = 15
    seeds = {"a": 1000, "b": 2000}
    procs = {
        k: _start_worker(root, "race", count, seed, "staging", PUBLISH_WORKER_GO_FILE=str(go))
        for k, seed in seeds.items()
    }
    try:
        for proc in procs.values():
            _wait_for_line(proc, "stdout", "ready")
        go.touch()  # both are imported and waiting: start them together
        outputs = {k: proc.communicate(timeout=WAIT_S) for k, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    for key, (_out, err) in outputs.items():
        assert procs[key].returncode == 0, err[-2000:]
    claimed = {
        k: [int(line.split()[1]) for line in out.splitlines() if line.startswith("published")]
        for k, (out, _) in outputs.items()
    }
    assert len(claimed["a"]) == len(claimed["b"]) == count
    assert sorted(claimed["a"] + claimed["b"]) == list(range(1, 2 * count + 1))  # distinct, no gaps

    store = ModelStore(root)
    for card in store.versions("race"):
        state, _ = store.load(card.ref)  # sha256 and shapes verified
        expected = random_state(card.lineage["seed"])  # the weights are the ones that publisher wrote
        np.testing.assert_array_equal(state["head.weight"], expected["head.weight"])
    raw = json.loads((root / "race" / "aliases.json").read_text())
    # Every alias move was kept: each of the 2N publishes moved "staging", none was lost to a race.
    assert sorted([*raw["history"]["staging"], raw["aliases"]["staging"]]) == list(range(1, 2 * count + 1))
    assert raw["aliases"]["staging"] in (claimed["a"][-1], claimed["b"][-1])
