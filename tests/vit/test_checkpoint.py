"""vit.checkpoint: .ckpt files round-trip atomically; strict loading names every bad key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny import TINY
from vitserve.vit.checkpoint import (
    CheckpointMismatch,
    load_checkpoint_file,
    load_state_dict,
    save_checkpoint,
    state_dict,
)
from vitserve.vit.model import create_model


def test_save_and_load_round_trip_leave_no_temporary(tmp_path: Path) -> None:
    state = state_dict(create_model(TINY))
    save_checkpoint(state, tmp_path / "weights.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["weights.ckpt"]
    loaded = load_checkpoint_file(tmp_path / "weights.ckpt")
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_strict_load_names_missing_unexpected_and_mis_shaped_keys() -> None:
    model = create_model(TINY)
    state = state_dict(model)
    del state["blocks.0.norm1.beta"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["head.bias"] = np.zeros(7, np.float32)
    with pytest.raises(CheckpointMismatch) as err:
        load_state_dict(model, state)
    assert (err.value.missing, err.value.unexpected) == (["blocks.0.norm1.beta"], ["extra.weight"])
    assert "head.bias (checkpoint (7,), model (10,))" in str(err.value)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint_file(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "absent.ckpt")
