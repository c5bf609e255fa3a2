"""The export cache inside a store version serves only what it verified, and exports only clean labels.

A cached graph is bound to the card's weights digest (its name and its manifest) and to its own digest; the
engines load the very bytes that were checked, so a file swapped after the check is never run. An OpenVINO IR's
weights (``.bin``) are always checked, whatever its manifest says; a cached file that is a symlink is not a
cached export. A Triton ``labels.txt`` has exactly one line per class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.tiny import TINY, publish_tiny
from vitserve.model_store import ModelStore, StoreError
from vitserve.model_store.card import Card
from vitserve.runtime import export_cache
from vitserve.runtime.export_cache import MissingArtefact, cache_path, cached_onnx, cached_static_int8
from vitserve.runtime.model_export import ExportRefused, export_version
from vitserve.runtime.onnx_engine import onnxruntime_engine_for

SHAPE = (3, 32, 32)


@pytest.fixture
def published(tmp_path: Path) -> tuple[ModelStore, Card]:
    store = ModelStore(tmp_path / "store")
    return store, publish_tiny(store, seed=1)


def _run_bytes(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _tampered(model: bytes) -> bytes:
    """The same graph with every 1-D initialiser of the head's width shifted: other logits, same shapes."""
    proto = onnx.load_model_from_string(model)
    for init in proto.graph.initializer:
        if list(init.dims) == [TINY.num_classes]:
            array = onnx.numpy_helper.to_array(init) + 5.0
            init.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), init.name))
    return proto.SerializeToString()


def test_a_graph_swapped_after_its_check_is_not_what_the_engine_runs(published, monkeypatch) -> None:
    import onnxruntime as ort

    store, card = published
    path = cached_onnx(store, card)
    good = path.read_bytes()
    real_session = ort.InferenceSession

    def swapped_then_loaded(source: object, *args: object, **kwargs: object) -> object:
        path.write_bytes(_tampered(good))  # between the freshness check and the load
        return real_session(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", swapped_then_loaded)
    engine = onnxruntime_engine_for(store, card, batch_sizes=(2,), threads=1)
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _run_bytes(good, x), atol=1e-5, rtol=0)


def test_an_openvino_graph_swapped_after_its_check_is_not_what_it_compiles(published, monkeypatch) -> None:
    import openvino as ov

    from vitserve.runtime.openvino_engine import openvino_engine_for

    store, card = published
    path = cached_onnx(store, card)
    good = path.read_bytes()
    real_read = ov.Core.read_model

    def swapped_then_read(self: ov.Core, *args: object, **kwargs: object) -> object:
        path.write_bytes(_tampered(good))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "read_model", swapped_then_read)
    engine = openvino_engine_for(store, card, batch_sizes=(2,), threads=1)
    x = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _run_bytes(good, x), atol=1e-4, rtol=0)


def test_an_ir_whose_weights_changed_is_stale_even_when_its_manifest_drops_their_digest(published) -> None:
    import openvino as ov

    store, card = published
    source = cached_onnx(store, card)
    xml = export_cache.static_int8_path(store, card)  # an IR in the static int8 artefact's place
    ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=False)
    export_cache.write_manifest(xml, export_cache.expected_manifest(card, "int8-static"))
    assert cached_static_int8(store, card) == xml
    weights = xml.with_suffix(".bin")
    raw = bytearray(weights.read_bytes())
    raw[-8:] = b"\x7f" * 8
    weights.write_bytes(bytes(raw))
    manifest = json.loads(xml.with_suffix(".json").read_text())
    del manifest["bin_sha256"]
    xml.with_suffix(".json").write_text(json.dumps(manifest))
    assert not export_cache.is_fresh(xml, export_cache.expected_manifest(card, "int8-static"))
    with pytest.raises(MissingArtefact):
        cached_static_int8(store, card)


def test_a_cached_graph_that_is_a_symlink_is_exported_again(published, tmp_path) -> None:
    store, card = published
    path = cached_onnx(store, card)
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(path.read_bytes())  # the right bytes, but a file the cache does not own
    path.unlink()
    path.symlink_to(outside)
    assert not export_cache.is_fresh(path, export_cache.expected_manifest(card, "fp32"))
    assert cached_onnx(store, card) == path
    assert not path.is_symlink() and path.is_file()


@pytest.mark.parametrize("sha256", ["../../../../../escape" + "0" * 43, "", "Z" * 64])
def test_the_cache_key_is_a_digest_never_a_path(published, sha256) -> None:
    """The file name holds the card's digest: a card holding ``../`` there named a file outside the cache."""
    store, card = published
    with pytest.raises(StoreError, match="sha256"):
        cache_path(store, card.replace(sha256=sha256), "fp32")


# --- the Triton labels.txt ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["nine\nten", "nine\r", "a\tb", "line\u2028sep"])
def test_an_export_refuses_labels_that_would_shift_the_lines_of_labels_txt(published, tmp_path, label) -> None:
    store, card = published
    card = card.replace(labels=[*card.labels[:-1], label])  # a card built in memory, not read from the store
    with pytest.raises(ExportRefused, match="label 9"):
        export_version(store, card, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()  # refused before anything was written


def test_labels_txt_has_one_line_per_class(published, tmp_path) -> None:
    store, card = published
    card = card.replace(labels=[f"ünïcode {i} · ok" for i in range(TINY.num_classes)])
    result = export_version(store, card, tmp_path / "repo")
    lines = (result.root / card.name / "labels.txt").read_text(encoding="utf-8").split("\n")
    assert lines[:-1] == card.labels and lines[-1] == ""
    assert (result.version_dir / "model.onnx").read_bytes() == cached_onnx(store, card).read_bytes()
