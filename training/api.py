"""The seed's ``Trainer`` surface, thin over the code the CLI runs (``trainer.train``, ``evaluate``, the
store's ``pipeline``). The seed's three ways:

    # 1. fine-tune from a stored checkpoint, then evaluate and predict
    t = Trainer(model="vit_base_p16", train_dataset="imageNet-1k/train", eval_dataset="imageNet-1k/val")
    t.train(finetune_from="vit-base-mae:1"); t.evaluate(); t.predict(["cat.jpg"], top_k=3)
    # 2. train from scratch
    Trainer(model="vit_base_p16", train_dataset="imageNet-1k/train", config="vit_base_p16_224_100ep").train()
    # 3. evaluate (and predict with) a stored version
    Trainer(model="vit-base:2", eval_dataset="imageNet-1k/val").evaluate()
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitserve.model_store import ModelStore
from vitserve.runtime.pipeline import pipeline
from vitserve.training.config import TrainConfig, load_config
from vitserve.training.evaluate import evaluate_version
from vitserve.training.trainer import TrainResult, train
from vitserve.vit.config import variant_names
from vitserve.vit.preprocess import ImageSource

TASK = "image_classification"


class Trainer:
    """Train, evaluate and predict for ``task="image_classification"``.

    ``model``: a variant name (the architecture to train from scratch) or a store reference (the weights to
    fine-tune, evaluate or predict with). ``config``: a ``TrainConfig``, a YAML path, a shipped config name,
    or a dict of fields. After ``train()``, ``model`` is the published version's reference.
    """

    def __init__(
        self,
        task: str = TASK,
        model: str = "vit_base_p16",
        train_dataset: str | Path | None = None,
        eval_dataset: str | Path | None = None,
        config: TrainConfig | str | Path | dict[str, Any] | None = None,
        *,
        store: ModelStore | None = None,
    ) -> None:
        if task != TASK:
            raise ValueError(f"unsupported task {task!r}; only {TASK!r}")
        self.model = model
        self.store = store or ModelStore()
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        if isinstance(config, TrainConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = TrainConfig.from_dict(config)
        elif config is not None:
            self.config = load_config(config)
        else:
            self.config = TrainConfig()
        self.last_result: TrainResult | None = None

    @property
    def _is_variant(self) -> bool:
        return self.model in variant_names()

    def train(self, finetune_from: str | None = None, resume: str | Path | None = None) -> TrainResult:
        """Train from scratch (``model`` a variant), or fine-tune ``finetune_from`` (default: ``model`` when it
        is a store reference); ``resume`` continues a run directory. Publishes the best checkpoint."""
        if self.train_dataset is None and resume is None:
            raise ValueError("Trainer.train needs train_dataset")
        init_from = finetune_from or (None if self._is_variant else self.model)
        changes: dict[str, Any] = {"init_from": init_from}
        if self._is_variant:
            changes["model"] = self.model
        if self.train_dataset is not None:
            changes["train_dir"] = str(self.train_dataset)
        if self.eval_dataset is not None:
            changes["val_dir"] = str(self.eval_dataset)
        result = train(self.config.replace(**changes), store=self.store, resume=resume)
        if result.card is not None:
            self.model = result.card.ref
        self.last_result = result
        return result

    def evaluate(self, eval_dataset: str | Path | None = None, *, dataset_name: str | None = None) -> dict[str, float]:
        """Top-1/top-5/per-class metrics of the stored ``model`` over every image; recorded in its card."""
        data = eval_dataset or self.eval_dataset
        if data is None:
            raise ValueError("Trainer.evaluate needs eval_dataset")
        if self._is_variant:
            raise ValueError(f"{self.model!r} is an architecture without weights: train() first or name a version")
        card, result = evaluate_version(
            self.store,
            self.model,
            data,
            dataset_name=dataset_name,
            batch_size=self.config.eval_batch_size,
            workers=self.config.num_workers,
        )
        return result.metrics(card.labels)

    def predict(self, images: ImageSource | Sequence[ImageSource], top_k: int = 3) -> list[list[dict[str, Any]]]:
        """Per image, the ``top_k`` ``{"label", "index", "score"}`` of the stored ``model`` (the store's pipeline)."""
        return pipeline(TASK, model=self.model, store=self.store)(images, top_k=top_k)
