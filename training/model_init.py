"""The model a run starts from: a named variant from scratch, or a store version to fine-tune.

Fine-tuning onto a different class count keeps everything but the head, which is freshly initialised
(MAE's small truncated-normal head); the lineage records which version the weights came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mindspore as ms

from vitserve.model_store import ModelStore
from vitserve.training.config import TrainConfig
from vitserve.vit.checkpoint import load_state_dict, state_dict
from vitserve.vit.config import DataConfig, ViTConfig, get_variant
from vitserve.vit.model import VisionTransformer, create_model

log = logging.getLogger(__name__)

HEAD_KEYS = ("head.weight", "head.bias")


@dataclass(frozen=True)
class InitialModel:
    model: VisionTransformer
    config: ViTConfig
    data: DataConfig
    lineage: dict[str, Any]  # where the initial weights came from


def initial_model(config: TrainConfig, num_classes: int, store: ModelStore | None) -> InitialModel:
    """Build the run's starting model for ``num_classes`` classes.

    Seeds MindSpore with ``config.seed`` first: every data-parallel rank builds identical initial weights
    (the head re-initialisation of a fine-tune included), which the gradient all-reduce relies on.
    """
    ms.set_seed(config.seed)
    if config.init_from is None:
        variant = get_variant(config.model)
        vit_config = variant.config.replace(
            **config.model_args, num_classes=num_classes, drop_path_rate=config.drop_path_rate
        )
        data = DataConfig.from_dict({**variant.data.to_dict(), "img_size": vit_config.img_size, **config.data_args})
        return InitialModel(create_model(vit_config), vit_config, data, {"init": "scratch", "variant": config.model})
    if store is None:
        raise ValueError(f"init_from {config.init_from!r} needs a model store")
    weights, card = store.load(config.init_from)
    vit_config = card.config.replace(**config.model_args, num_classes=num_classes, drop_path_rate=config.drop_path_rate)
    data = DataConfig.from_dict({**card.data.to_dict(), "img_size": vit_config.img_size, **config.data_args})
    model = create_model(vit_config)
    reinit = card.config.num_classes != num_classes
    if reinit:
        log.info(
            "%s has %d classes, the data %d: re-initialising the head", card.ref, card.config.num_classes, num_classes
        )
        fresh = state_dict(model)
        weights = {k: v for k, v in weights.items() if k not in HEAD_KEYS} | {k: fresh[k] for k in HEAD_KEYS}
    load_state_dict(model, weights)
    lineage = {"init": "finetune", "init_from": card.ref, "init_sha256": card.sha256, "head_reinitialised": reinit}
    return InitialModel(model, vit_config, data, lineage)
