"""Data-parallel training under msrun (2 CPU workers): both ranks end with identical weights, equal to one
worker's on the same global batch."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.train_runs import REPO, env, tiny_recipe, write_recipe
from vitserve.training.config import TrainConfig
from vitserve.training.model_init import initial_model
from vitserve.vit.checkpoint import load_checkpoint_file, state_dict

STEPS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(config: Path, data: Path, run_dir: Path, dump: Path) -> list[str]:
    return [
        "training/distributed.py",
        "--config",
        str(config),
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        str(STEPS),
        "--dump-weights",
        str(dump),
    ]


@pytest.mark.slow
def test_two_msrun_workers_match_one_worker(color_folder: Path, tmp_path: Path) -> None:
    # Mixup pairs images within each rank's batch, so it is off; drop-path, RandAugment and erasing stay on.
    recipe = tiny_recipe(tmp_path, augment={"mixup": 0.0, "cutmix": 0.0})
    two = write_recipe(tmp_path / "two.yaml", {**recipe, "batch_size": 4})  # 2 ranks × 4
    one = write_recipe(tmp_path / "one.yaml", {**recipe, "batch_size": 8})  # 1 worker × 8
    msrun = Path(sys.executable).parent / "msrun"
    command = [
        str(msrun),
        "--worker_num=2",
        "--local_worker_num=2",
        f"--master_port={_free_port()}",
        "--join=True",
        f"--log_dir={tmp_path / 'msrun_logs'}",
        *_entry(two, color_folder, tmp_path / "dp", tmp_path / "w2"),
    ]
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=400)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "msrun_logs").glob("*.log")))
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{logs}"
    single = subprocess.run(
        [sys.executable, *_entry(one, color_folder, tmp_path / "sp", tmp_path / "w1")],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    rank0, rank1 = (load_checkpoint_file(tmp_path / "w2" / f"rank{r}.ckpt") for r in (0, 1))
    alone = load_checkpoint_file(tmp_path / "w1" / "rank0.ckpt")
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
        np.testing.assert_allclose(rank0[name], alone[name], rtol=1e-4, atol=2e-6, err_msg=name)
    # ... and training moved them: not equal merely because every run kept the seeded initial weights.
    start = state_dict(initial_model(TrainConfig.from_dict(recipe), 3, None).model)
    assert max(float(np.abs(rank0[k] - start[k]).max()) for k in start) > 1e-3
    # Only rank 0 wrote the run: one metrics log, checkpoints present.
    assert (tmp_path / "dp" / "metrics.jsonl").is_file() and (tmp_path / "dp" / "checkpoints" / "latest").is_file()
