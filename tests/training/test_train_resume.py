"""Resume is exact: N steps straight == N/2-ish steps, SIGKILL, resume to N (weights and optimizer state)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training.train_runs import REPO, env, tiny_recipe, vitserve, write_recipe
from vitserve.training.checkpointing import load_training_checkpoint

TOTAL = 20  # 18 images / batch 4 = 4 steps per epoch × 5 epochs


def _start(config: Path, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vitserve.admin.main",
            "train",
            "--config",
            str(config),
            "--run-dir",
            str(run_dir),
            "--no-publish",
        ],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_after_checkpoint(process: subprocess.Popen[str], run_dir: Path, step: int, timeout_s: float = 240) -> None:
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if latest.is_file() and int(latest.read_text().strip().split("_")[1]) >= step:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{out[-3000:]}"


@pytest.mark.slow
def test_killed_and_resumed_run_equals_a_straight_run(color_folder: Path, tmp_path: Path) -> None:
    config = write_recipe(
        tmp_path / "tiny.yaml", tiny_recipe(tmp_path, train_dir=str(color_folder), checkpoint_every=2)
    )
    killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
    _kill_after_checkpoint(_start(config, killed_dir), killed_dir, step=TOTAL // 2 - 2)
    _, killed_state = load_training_checkpoint(killed_dir)
    assert 0 < killed_state.step < TOTAL

    resumed = vitserve("train", "--resume", str(killed_dir), "--no-publish")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = vitserve("train", "--config", str(config), "--run-dir", str(straight_dir), "--no-publish")
    assert straight.returncode == 0, straight.stderr[-3000:]

    (a, a_state), (b, b_state) = load_training_checkpoint(killed_dir), load_training_checkpoint(straight_dir)
    assert a_state.step == b_state.step == TOTAL and a_state.epoch == b_state.epoch == 5
    assert sorted(a) == sorted(b) and any(k.startswith("adam_m.") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    losses = [_losses(d) for d in (killed_dir, straight_dir)]
    assert losses[0][-5:] == losses[1][-5:]  # the logged losses after the resume point agree too


def _losses(run_dir: Path) -> list[float]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]
