"""deploy/scripts/train.sh turns a training Job's environment into the right msrun command line, one that
MindSpore's own msrun parser accepts, naming the trainer's real msrun entry script (dry run: nothing launches)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.k8s_objects import DEPLOY, Manifest, find

TRAIN_SH = DEPLOY / "scripts" / "train.sh"


def dry_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "VITSERVE_TRAIN_DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(TRAIN_SH), *args], env=clean, capture_output=True, text=True, timeout=120)


def job_env(job: Manifest) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def job_args(job: Manifest) -> list[str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    assert args[0] == "/opt/vitserve/scripts/train.sh"
    return args[1:]


def parse_with_msrun(command: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
    """msrun's own argparse over the command (SystemExit if msrun would reject it)."""
    from mindspore.parallel.cluster import run as msrun

    assert command[0] == "msrun"
    monkeypatch.setattr(sys, "argv", command)
    return msrun.get_args()


@pytest.mark.parametrize("index", [0, 1])
def test_two_node_job_pod_runs_msrun_for_its_rank(
    rendered: dict[str, list[Manifest]], index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = find(rendered["training/two-node"], "Job")
    env = job_env(job) | {"JOB_COMPLETION_INDEX": str(index)}  # what the Indexed Job sets in pod `index`
    out = dry_run(env, *job_args(job))
    assert out.returncode == 0, out.stderr
    command = shlex.split(out.stdout)
    args = parse_with_msrun(command, monkeypatch)
    nodes, per_node = int(env["NUM_NODES"]), int(env["WORKERS_PER_NODE"])
    assert vars(args)["worker_num"] == nodes * per_node
    assert vars(args)["local_worker_num"] == per_node
    assert vars(args)["node_rank"] == index
    assert vars(args)["master_addr"] == env["MASTER_ADDR"]
    assert vars(args)["master_port"] == int(env["MASTER_PORT"])
    entry = Path(vars(args)["task_script"])
    assert entry.is_file() and entry.parent.name == "training", entry
    assert vars(args)["task_script_args"] == job_args(job)


def test_single_node_job_runs_all_workers_locally(
    rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = find(rendered["training/single-node"], "Job")
    out = dry_run(job_env(job), *job_args(job))
    assert out.returncode == 0, out.stderr
    args = vars(parse_with_msrun(shlex.split(out.stdout), monkeypatch))
    assert args["worker_num"] == args["local_worker_num"] == int(job_env(job)["WORKERS_PER_NODE"])
    assert args["node_rank"] == 0 and args["master_addr"] == "127.0.0.1"


def test_a_rank_outside_the_job_is_refused() -> None:
    out = dry_run({"NUM_NODES": "2", "JOB_COMPLETION_INDEX": "2"})
    assert out.returncode == 2 and "not in 0..1" in out.stderr
    assert os.access(TRAIN_SH, os.X_OK)


@pytest.mark.parametrize("build", ["training/single-node", "training/two-node"])
def test_job_arguments_are_ones_the_trainer_accepts(rendered: dict[str, list[Manifest]], build: str) -> None:
    from vitserve.training import distributed
    from vitserve.training.config import load_config

    job = find(rendered[build], "Job")
    # The entry script's own parser (what msrun's workers run); a rejected argument exits here.
    args = distributed._parser().parse_args(job_args(job))
    load_config(args.config)  # a shipped recipe or a file in the image
    (export,) = job["spec"]["template"]["spec"]["initContainers"]
    # The init container exports the data set to exactly where the trainer reads it.
    assert f"export_digits('{args.data}')" in export["command"][-1]
    mounts = {m["mountPath"] for m in export["volumeMounts"]}
    assert any(str(args.data).startswith(f"{m}/") for m in mounts)
