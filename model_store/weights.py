"""The weights file of a version: write durably, hash, read back, check against the architecture.

MindSpore is imported only when weights are actually read or written, so listing and resolving stay fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from vit.config import ViTConfig

StateDict = dict[str, np.ndarray]


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights(state: StateDict, config: ViTConfig) -> None:
    """Raise ``vit.checkpoint.CheckpointMismatch`` (a ValueError naming the keys) unless shapes match ``config``."""
    from vit.checkpoint import check_state_dict
    from vit.convert_tables import expected_shapes

    check_state_dict(expected_shapes(config), state)


def write_weights(state: StateDict, path: Path) -> None:
    """Save a MindSpore ``.ckpt`` at ``path`` (a private staging file) and fsync it, so that the later
    rename of its directory publishes whole bytes. ``path`` must end in ``.ckpt``: MindSpore appends it."""
    import mindspore as ms

    if path.suffix != ".ckpt":
        raise ValueError(f"weights file must end in .ckpt, got {path.name}")
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_weights(path: Path) -> StateDict:
    """Read a ``.ckpt`` into numpy arrays (FileNotFoundError / ValueError on a missing or unreadable file)."""
    from vit.checkpoint import load_checkpoint_file

    return load_checkpoint_file(path)
