"""Weights in and out of a model: ``dict[str, ndarray]`` state dicts and MindSpore ``.ckpt`` files.

A missing, unexpected or mis-shaped key is always an error that names it: never a silent partial load.
MindSpore is imported inside the functions that touch tensors: the checks and the conversion tables that build
on them stay importable in a fraction of a second (the CLI's store commands never load MindSpore).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitserve.vit.files import atomic_path
from vitserve.vit.pos_embed import resample_pos_embed

if TYPE_CHECKING:
    from mindspore import nn

StateDict = dict[str, np.ndarray]


class CheckpointMismatch(ValueError):
    """A state dict does not fit a model; the message lists every missing, unexpected or mis-shaped key."""

    def __init__(self, missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> None:
        self.missing, self.unexpected, self.mis_shaped = missing, unexpected, mis_shaped
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if mis_shaped:
            parts.append(f"mis-shaped keys: {', '.join(mis_shaped)}")
        super().__init__("checkpoint does not match the model: " + "; ".join(parts))


def state_dict(model: nn.Cell) -> StateDict:
    """Every parameter as a float32 (or its own dtype) numpy array, keyed by its name."""
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def check_state_dict(expected: dict[str, tuple[int, ...]], state: StateDict) -> None:
    """Raise ``CheckpointMismatch`` unless ``state`` has exactly the expected keys and shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])})"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatch(missing, unexpected, mis_shaped)


def adapt_pos_embed(state: StateDict, grid_size: int) -> StateDict:
    """Resample ``pos_embed`` when the checkpoint was trained at another resolution."""
    pos = state.get("pos_embed")
    if pos is None or pos.ndim != 3:
        return state
    old_grid = math.isqrt(pos.shape[1] - 1)
    if old_grid == grid_size or old_grid * old_grid != pos.shape[1] - 1:
        return state
    return {**state, "pos_embed": resample_pos_embed(pos, grid_size)}


def load_state_dict(model: nn.Cell, state: StateDict) -> None:
    """Copy ``state`` into ``model`` after checking every key and shape (strict)."""
    import mindspore as ms

    params = {p.name: p for p in model.get_parameters()}
    grid = getattr(getattr(model, "config", None), "grid_size", None)
    if grid is not None:
        state = adapt_pos_embed(state, grid)
    check_state_dict({k: tuple(p.shape) for k, p in params.items()}, state)
    for name, param in params.items():
        param.set_data(ms.Tensor(np.ascontiguousarray(state[name]), dtype=param.dtype))


def save_checkpoint(state: StateDict, path: str | os.PathLike[str]) -> None:
    """Write a MindSpore ``.ckpt``, whole or not at all."""
    import mindspore as ms

    # MindSpore appends ".ckpt" to any file name that lacks it, so the temporary name must end in it.
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp))


def load_checkpoint_file(path: str | os.PathLike[str]) -> StateDict:
    """Read a MindSpore ``.ckpt`` into numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    import mindspore as ms

    try:
        params = ms.load_checkpoint(str(path))
    except Exception as err:  # MindSpore raises bare ValueError/RuntimeError on corrupt files
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    # A .ckpt may also hold plain values (append_dict: strings, numbers): weights are tensors only.
    odd = sorted(name for name, p in params.items() if not hasattr(p, "asnumpy"))
    if odd:
        shown = ", ".join(f"{name} ({type(params[name]).__name__})" for name in odd[:5])
        raise ValueError(f"checkpoint {path.name}: entries that are not tensors: {shown}")
    return {name: p.asnumpy() for name, p in params.items()}
