"""The seed's three ways through ``Trainer``: train from scratch; fine-tune a stored version onto other
classes, then evaluate and predict; evaluate a stored version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.train_runs import tiny_recipe, write_folder
from vitserve.model_store import ModelStore
from vitserve.training.api import Trainer


@pytest.mark.slow
def test_trainer_three_ways(color_folder: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    recipe = tiny_recipe(tmp_path, epochs=2, name="colors-vit", val_name="colors-val")

    # 2. From scratch: the architecture by variant name; the best validated weights are published.
    scratch = Trainer(
        model="vit_base_p16", train_dataset=color_folder, eval_dataset=color_folder, config=recipe, store=store
    )
    result = scratch.train()
    assert result.card is not None and scratch.model == "colors-vit:1" == result.card.ref
    card = store.resolve("colors-vit:1")
    assert card.labels == ["blue", "green", "red"] and card.config.num_classes == 3
    assert card.lineage["init"] == "scratch" and len(card.lineage["train_files_sha256"]) == 64
    assert card.metrics["colors-val"]["num_images"] == 18.0
    assert (store.version_dir(card) / "confusion_colors-val.png").is_file()

    # 1. Fine-tune the stored version onto two other classes (new head), then evaluate and predict.
    pair = write_folder(tmp_path / "pair", {"cyan": 4, "magenta": 4}, seed=1)
    finetune = Trainer(
        model="vit_base_p16",
        train_dataset=pair,
        eval_dataset=pair,
        config={**recipe, "name": "pair-vit", "epochs": 1},
        store=store,
    )
    tuned = finetune.train(finetune_from="colors-vit:1")
    assert tuned.card is not None
    assert tuned.card.lineage["init_from"] == "colors-vit:1" and tuned.card.lineage["head_reinitialised"] is True
    metrics = finetune.evaluate(dataset_name="pair-eval")
    assert metrics["num_images"] == 8.0
    # The evaluator and predict go through the same runtime: its top-1 is predict's accuracy on the same images.
    images = sorted(pair.glob("*/*.png"))
    answers = finetune.predict([str(path) for path in images], top_k=1)
    correct = [answer[0]["label"] == path.parent.name for answer, path in zip(answers, images, strict=True)]
    assert metrics["top1"] == pytest.approx(sum(correct) / len(images))
    assert store.resolve(tuned.card.ref).metrics["pair-eval"]["top1"] == metrics["top1"]
    (predictions,) = finetune.predict([str(pair / "cyan" / "000.png")], top_k=2)
    assert [p["label"] for p in predictions] in (["cyan", "magenta"], ["magenta", "cyan"])
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-5

    # 3. Evaluate a stored version: the same weights on the same images give the recorded top-1.
    stored = Trainer(model="colors-vit:1", eval_dataset=color_folder, store=store)
    assert stored.evaluate(dataset_name="again")["top1"] == pytest.approx(card.metrics["colors-val"]["top1"])
