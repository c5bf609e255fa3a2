"""``from_pretrained`` and ``pipeline`` on a tiny random model published to a temporary store."""

from __future__ import annotations

import itertools
import json

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from tests.tiny import TINY, random_state
from vitserve.model_store import IntegrityError, ModelNotFound
from vitserve.model_store.pretrained import Pretrained, default_labels, from_pretrained
from vitserve.model_store.weights import write_weights
from vitserve.runtime.pipeline import pipeline
from vitserve.vit.checkpoint import load_state_dict
from vitserve.vit.model import VisionTransformer, create_model
from vitserve.vit.preprocess import preprocess


def _reference_logits(seed: int, batch: np.ndarray) -> np.ndarray:
    model = create_model(TINY)
    load_state_dict(model, random_state(seed))
    model.set_train(False)
    return model(ms.Tensor(batch)).asnumpy()


def _images(rng: np.random.Generator) -> list[np.ndarray]:
    return [(rng.random((40 + 7 * i, 48, 3)) * 255).astype(np.uint8) for i in range(3)]


def test_from_pretrained_loads_the_stored_weights_in_eval_mode(store, publish, rng):
    publish("tiny", seed=5)
    loaded = from_pretrained("tiny", store=store)
    assert isinstance(loaded, Pretrained) and isinstance(loaded.model, VisionTransformer)
    assert loaded.card.ref == "tiny:1" and not loaded.model.training
    batch = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(ms.Tensor(batch)).asnumpy(), _reference_logits(5, batch), atol=1e-6)


def test_from_pretrained_never_falls_back_to_random_weights(store, publish):
    publish("tiny")
    with pytest.raises(ModelNotFound, match=r"'vit_base_p16' not found.*models: tiny.*architecture, not weights"):
        from_pretrained("vit_base_p16", store=store)
    with pytest.raises(ModelNotFound, match="no checkpoint at"):
        from_pretrained("./missing/model.ckpt", store=store)


def test_a_variant_name_in_the_store_resolves_to_that_model(store, publish):
    publish("vit_base_p16", seed=2)  # tiny weights under the seed's name: the store's model wins
    assert from_pretrained("vit_base_p16", store=store).card.ref == "vit_base_p16:1"


def _convert_out_dir(path, seed=4, labels=True):
    """What `vitserve convert --out DIR` writes (plus an optional labels.json)."""
    path.mkdir()
    write_weights(random_state(seed), path / "model.ckpt")
    (path / "config.json").write_text(TINY.to_json())
    (path / "data.json").write_text(json.dumps({"img_size": 32, "crop_pct": 0.9, "mean": [0.5] * 3, "std": [0.5] * 3}))
    if labels:
        (path / "labels.json").write_text(json.dumps([f"c{i}" for i in range(10)]))
    return path


def test_from_pretrained_reads_a_converted_directory_and_a_ckpt_path(tmp_path, store, rng):
    folder = _convert_out_dir(tmp_path / "converted")
    batch = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    for source in (folder, folder / "model.ckpt", str(folder)):
        loaded = from_pretrained(source, store=store)
        assert loaded.card.data.crop_pct == 0.9 and loaded.card.labels[3] == "c3"
        np.testing.assert_allclose(loaded.model(ms.Tensor(batch)).asnumpy(), _reference_logits(4, batch), atol=1e-6)


def test_a_directory_without_config_or_with_wrong_weights_is_an_error(tmp_path, store):
    folder = _convert_out_dir(tmp_path / "converted", labels=False)
    assert from_pretrained(folder, store=store).card.labels == [str(i) for i in range(10)]
    (folder / "config.json").write_text(TINY.replace(embed_dim=64).to_json())
    with pytest.raises(IntegrityError, match="mis-shaped"):
        from_pretrained(folder, store=store)
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotFound, match=r"config\.json is missing"):
        from_pretrained(folder, store=store)


def test_pipeline_returns_sorted_top_k_softmax_scores_per_image(store, publish, rng):
    publish("tiny", seed=9)
    pipe = pipeline("image_classification", model="tiny", store=store)
    images = _images(rng)
    results = pipe(images, top_k=4)
    logits = _reference_logits(9, preprocess(images, pipe.card.data)).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert len(results) == 3
    for row, predictions in zip(probs, results, strict=True):
        assert [p["index"] for p in predictions] == list(np.argsort(-row)[:4])
        assert [p["label"] for p in predictions] == [f"class{p['index']}" for p in predictions]
        np.testing.assert_allclose([p["score"] for p in predictions], np.sort(row)[::-1][:4], rtol=1e-5)
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(predictions))


def test_pipeline_accepts_paths_pil_images_arrays_and_defaults_to_top_3(tmp_path, store, publish, rng):
    publish("tiny", seed=9)
    pipe = pipeline("image_classification", model="tiny:1", store=store)
    array = _images(rng)[0]
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    from_array = pipe(array)
    assert len(from_array) == 1 and len(from_array[0]) == 3
    assert pipe(path) == pipe(str(path)) == pipe(Image.fromarray(array)) == from_array
    _assert_same(pipe(np.stack([array, array])), from_array * 2)  # a (B, H, W, C) array is a batch
    _assert_same(pipe([path, array], top_k=1), [from_array[0][:1]] * 2)


def _assert_same(results, expected):
    """Same labels and indices in the same order; scores equal up to batch-size-dependent float rounding."""
    assert [[(p["label"], p["index"]) for p in r] for r in results] == [
        [(p["label"], p["index"]) for p in r] for r in expected
    ]
    np.testing.assert_allclose(
        [[p["score"] for p in r] for r in results], [[p["score"] for p in r] for r in expected], rtol=1e-5
    )


def test_pipeline_rejects_unknown_tasks_and_missing_models(store):
    with pytest.raises(ValueError, match="unsupported task"):
        pipeline("object_detection", model="tiny", store=store)
    with pytest.raises(ModelNotFound):
        pipeline("image_classification", model="tiny", store=store)


def test_default_labels_are_imagenet_for_1000_classes():
    labels = default_labels(1000)
    assert labels[0] == "tench" and labels[134] == labels[517] == "crane"
    assert default_labels(3) == ["0", "1", "2"]
