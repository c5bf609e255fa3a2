"""The starting model: fine-tuning keeps the backbone and re-initialises a head of another class count;
the training forward with all-ones drop-path masks is exactly the model's forward."""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np

from tests.training.train_runs import TINY_MODEL
from vitserve.model_store import ModelStore
from vitserve.training.config import TrainConfig
from vitserve.training.model_init import initial_model
from vitserve.training.step import TrainNetwork, drop_path_masks
from vitserve.vit.checkpoint import state_dict
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.model import create_model


def _publish_source(store: ModelStore, num_classes: int) -> dict[str, np.ndarray]:
    config = ViTConfig(**TINY_MODEL, num_classes=num_classes)  # type: ignore[arg-type]
    ms.set_seed(123)
    weights = state_dict(create_model(config))
    store.publish(
        "source",
        weights,
        config,
        DataConfig(img_size=32),
        [f"c{i}" for i in range(num_classes)],
        lineage={"test": True},
    )
    return weights


def test_finetune_onto_other_classes_reinitialises_only_the_head(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    source = _publish_source(store, num_classes=5)
    init = initial_model(TrainConfig(init_from="source:1", drop_path_rate=0.0), 3, store)
    weights = state_dict(init.model)
    assert weights["head.weight"].shape == (3, 32) and init.config.num_classes == 3
    assert init.lineage == {
        "init": "finetune",
        "init_from": "source:1",
        "init_sha256": store.resolve("source").sha256,
        "head_reinitialised": True,
    }
    for name, value in source.items():
        if not name.startswith("head."):
            np.testing.assert_array_equal(weights[name], value, err_msg=name)
    assert np.abs(weights["head.weight"]).max() < 1e-3 and not weights["head.bias"].any()  # MAE's small head init
    assert init.data == DataConfig(img_size=32)  # preprocessing travels with the weights


def test_finetune_onto_the_same_classes_keeps_the_head(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    source = _publish_source(store, num_classes=3)
    init = initial_model(TrainConfig(init_from="source", drop_path_rate=0.0), 3, store)
    np.testing.assert_array_equal(state_dict(init.model)["head.weight"], source["head.weight"])
    assert init.lineage["head_reinitialised"] is False


def test_same_seed_gives_identical_initial_weights() -> None:
    config = TrainConfig(model="vit_base_p16", model_args=TINY_MODEL, seed=7)
    a, b = state_dict(initial_model(config, 4, None).model), state_dict(initial_model(config, 4, None).model)
    c = state_dict(initial_model(config.replace(seed=8), 4, None).model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


def test_training_forward_matches_the_model_and_drops_paths() -> None:
    ms.set_seed(0)
    model = create_model(ViTConfig(**TINY_MODEL, num_classes=4))  # type: ignore[arg-type]
    model.set_train(False)
    network = TrainNetwork(model)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    ones = ms.Tensor(np.ones((2, 2, 3), np.float32))
    np.testing.assert_allclose(network.logits(x, ones).asnumpy(), model(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert [p.name for p in network.trainable_params()] == [p.name for p in model.trainable_params()]
    masks = drop_path_masks(2, 0.5, seed=0, step=0, global_batch=64, rank=0, batch_size=64)
    assert set(np.unique(masks[1])) <= {0.0, 2.0} and (masks[0] == 1.0).all()  # block 0 never drops
    half = drop_path_masks(2, 0.5, seed=0, step=0, global_batch=64, rank=1, batch_size=32)
    np.testing.assert_array_equal(half, masks[:, :, 32:])  # a rank's masks are its slice of the global ones
