"""A publish's private staging step: write the weights, read them back, compare; and the test pause hook."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from vitserve.model_store.errors import IntegrityError
from vitserve.model_store.weights import check_weights, write_weights
from vitserve.vit.checkpoint import StateDict, load_checkpoint_file
from vitserve.vit.config import ViTConfig
from vitserve.vit.files import sha256_file

# Test hook: publish pauses (sleeps) at the named stage, so a test can kill it there. Stages, in order:
# "staging" (empty staging dir), "weights" (weights written), "verified", "card" (card written, name lock
# held, about to rename), "claimed" (version visible, aliases not yet written).
PAUSE_ENV = "VITSERVE_STORE_TEST_PAUSE_AT"


def write_verified(state: StateDict, config: ViTConfig, path: Path) -> str:
    """Write the weights, read them back and compare: return the sha256 of the bytes that were verified."""
    write_weights(state, path)
    pause("weights")
    try:
        back = load_checkpoint_file(path)
        check_weights(back, config)
    except ValueError as err:
        raise IntegrityError(f"written weights do not read back: {err}") from err
    differ = sorted(k for k in state if not np.array_equal(back[k], np.asarray(state[k], dtype=back[k].dtype)))
    if differ:
        raise IntegrityError(f"written weights differ from the input after reading back: {', '.join(differ)}")
    return sha256_file(path)


def pause(stage: str) -> None:
    if os.environ.get(PAUSE_ENV) == stage:
        sys.stderr.write(f"vitserve-store: paused at {stage}\n")
        sys.stderr.flush()
        time.sleep(3600)
