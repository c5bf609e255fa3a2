"""The chaos test's model and its store writer: seeded random weights for the benchmarks' quick ViT, published as
the next version of ``chaos-vit``.

Run as ``python -m vitserve.benchmarks.chaos_writer ROOT SEED [ALIAS ...]`` it is a store writer in a process of
its own, which the driver kills (SIGKILL) mid-write: with ``VITSERVE_STORE_TEST_PAUSE_AT`` set to a stage of
``ModelStore.publish`` (``model_store.staging``) it prints the store's ``paused at STAGE`` line and waits there.
It prints ``published N`` once the version is visible; a publish the store refuses exits with the CLI's codes
(3 for a missing model or version, 4 for a refusal, 1 for another store error) and its one-line reason.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitserve.benchmarks.engine_bench import QUICK_CONFIG
from vitserve.model_store import Card, ModelStore, StoreError
from vitserve.model_store.errors import ModelNotFound, PromotionRefused
from vitserve.vit.config import DataConfig

NAME = "chaos-vit"
DATA = DataConfig(img_size=QUICK_CONFIG.img_size)
LABELS = [f"class_{i}" for i in range(QUICK_CONFIG.num_classes)]


def random_state(seed: int) -> dict[str, np.ndarray]:
    """Every parameter of the quick ViT, float32 N(0, 0.02²) (a trained ViT's scale), drawn in name order."""
    from vitserve.vit.model import parameter_shapes  # MindSpore: only where weights are made

    rng = np.random.default_rng(seed)
    shapes = parameter_shapes(QUICK_CONFIG)
    return {name: (rng.standard_normal(shapes[name]) * 0.02).astype(np.float32) for name in sorted(shapes)}


def publish_version(store: ModelStore, seed: int, aliases: Sequence[str] = ()) -> Card:
    """Publish ``random_state(seed)`` as the next version of ``NAME`` (``aliases`` pointed at it in the same step)."""
    state = random_state(seed)
    lineage = {"source": "random (chaos benchmark)", "seed": seed}
    return store.publish(NAME, state, QUICK_CONFIG, DATA, LABELS, lineage=lineage, aliases=tuple(aliases))


def main(argv: Sequence[str]) -> int:
    root, seed, *aliases = argv
    try:
        card = publish_version(ModelStore(Path(root)), int(seed), aliases)
    except StoreError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 3 if isinstance(err, ModelNotFound) else 4 if isinstance(err, PromotionRefused) else 1
    print(f"published {card.version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
