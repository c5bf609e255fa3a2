"""Resumable training checkpoints inside a run directory.

``<run>/checkpoints/step_00000040.ckpt`` holds the model's parameters, the optimizer's moments
(``adam_m.*``, ``adam_v.*``) and its step counter; ``step_00000040.json`` beside it holds the run state
(step, epoch, position in the epoch, seed, best validation so far). ``<run>/checkpoints/latest`` names the
newest complete pair: it is written last, atomically, so a run killed mid-save resumes from the previous one.
Together with the counter-based RNG (seed, epoch, step), this is everything a resumed run needs to continue
bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

from vitserve.vit.checkpoint import StateDict, load_checkpoint_file, save_checkpoint
from vitserve.vit.files import write_text_atomic

KEEP_LAST = 2  # resumable checkpoints kept; older ones are deleted after a newer one is complete


@dataclass
class RunState:
    """Where a run stands. ``step`` counts completed optimisation steps; ``epoch``/``position`` locate the next
    batch (``step == epoch × steps_per_epoch + position``)."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    seed: int = 0
    best_metric: float | None = None  # best validation top-1 so far
    best_step: int | None = None


def trainable_state(cells: list[nn.Cell]) -> StateDict:
    """Every parameter of ``cells`` (model and optimizer) by name."""
    return {p.name: p.asnumpy() for cell in cells for p in cell.get_parameters()}


def restore_state(cells: list[nn.Cell], state: StateDict) -> None:
    """Copy a saved state back into the parameters of ``cells``; any missing or extra name is an error."""
    params = {p.name: p for cell in cells for p in cell.get_parameters()}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"training checkpoint does not match: missing {missing}, unexpected {unexpected}")
    for name, param in params.items():
        if tuple(param.shape) != tuple(state[name].shape):
            raise ValueError(f"training checkpoint: {name} has shape {state[name].shape}, expected {param.shape}")
        param.set_data(ms.Tensor(np.ascontiguousarray(state[name]), dtype=param.dtype))


def save_training_checkpoint(run_dir: Path, cells: list[nn.Cell], state: RunState) -> Path:
    """Write the checkpoint for ``state.step`` and point ``latest`` at it; prune older ones. Returns its path."""
    directory = run_dir / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step_{state.step:08d}"
    save_checkpoint(trainable_state(cells), directory / f"{stem}.ckpt")
    write_text_atomic(directory / f"{stem}.json", json.dumps(dataclasses.asdict(state), indent=2))
    write_text_atomic(directory / "latest", stem)
    for old in sorted(directory.glob("step_*.ckpt"))[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return directory / f"{stem}.ckpt"


def load_training_checkpoint(run_dir: Path) -> tuple[StateDict, RunState]:
    """The newest complete checkpoint of ``run_dir``: (parameters by name, run state)."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise FileNotFoundError(f"no resumable checkpoint in {run_dir} (expected {pointer})")
    stem = pointer.read_text().strip()
    state = RunState(**json.loads((pointer.parent / f"{stem}.json").read_text()))
    return load_checkpoint_file(pointer.parent / f"{stem}.ckpt"), state
