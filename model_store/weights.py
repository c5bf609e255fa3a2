"""The weights file of a version: write durably, check against the architecture.

MindSpore is imported only when weights are actually read or written, so listing and resolving stay fast.
"""

from __future__ import annotations

from pathlib import Path

from vitserve.vit.checkpoint import StateDict
from vitserve.vit.config import ViTConfig
from vitserve.vit.files import atomic_path


def check_weights(state: StateDict, config: ViTConfig) -> None:
    """Raise ``vit.checkpoint.CheckpointMismatch`` (a ValueError naming the keys) unless shapes match ``config``."""
    from vitserve.vit.checkpoint import check_state_dict
    from vitserve.vit.model import parameter_shapes

    check_state_dict(parameter_shapes(config), state)


def write_weights(state: StateDict, path: Path) -> None:
    """Save a MindSpore ``.ckpt`` at ``path``, whole or not at all. ``path`` must end in ``.ckpt``: MindSpore
    appends it to any other name."""
    import mindspore as ms

    if path.suffix != ".ckpt":
        raise ValueError(f"weights file must end in .ckpt, got {path.name}")
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp))
