"""The MindSpore engine on a real tiny ViT in GRAPH_MODE: padding to buckets never changes a row's logits."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from tests.tiny import TINY, publish_tiny, random_state
from vitserve.runtime.engine import EngineOptions, MindSporeEngine, bucket_for, build_engine
from vitserve.vit.checkpoint import load_state_dict
from vitserve.vit.model import create_model

pytestmark = pytest.mark.slow  # compiles GRAPH_MODE graphs: ~10-25 s on 2 busy cores


def test_bucket_for() -> None:
    assert [bucket_for((1, 2, 4, 8), n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 8]


@pytest.fixture(scope="module")
def engine() -> MindSporeEngine:
    ms.set_context(mode=ms.GRAPH_MODE)
    model = create_model(TINY)
    load_state_dict(model, random_state(3))
    engine = MindSporeEngine(model, (1, 2, 4), image_shape=(3, 32, 32))
    engine.warmup()
    return engine


def test_padded_batches_match_unpadded_rows(engine: MindSporeEngine) -> None:
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    singles = np.concatenate([engine.run(x[i : i + 1]) for i in range(7)])
    for n in (3, 5, 7):  # padded to 4; split into 4 + 1; split into 4 + 4 (padded)
        out = engine.run(x[:n])
        assert out.shape == (n, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, singles[:n], atol=1e-5)
    assert [engine.padded_size(n) for n in (1, 3, 5, 7, 8)] == [1, 4, 5, 8, 8]


def test_wrong_input_shape_is_refused(engine: MindSporeEngine) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        engine.run(np.zeros((1, 3, 16, 16), dtype=np.float32))


def test_build_engine_loads_store_weights_and_names_unknown_kinds(tmp_path: object) -> None:
    from pathlib import Path

    from vitserve.model_store import ModelStore

    store = ModelStore(Path(str(tmp_path)) / "store")
    card = publish_tiny(store, seed=4)
    options = EngineOptions(batch_sizes=(1, 2))
    built = build_engine("mindspore", card, store, options)
    assert built.batch_sizes == (1, 2)
    reference = create_model(TINY)
    load_state_dict(reference, random_state(4))
    x = np.ones((1, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(built.run(x), reference(ms.Tensor(x)).asnumpy(), atol=1e-5)
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        build_engine("tensorrt", card, store, options)


def test_auto_falls_back_to_mindspore_when_the_cpu_runtime_is_missing(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    from vitserve.model_store import ModelStore
    from vitserve.runtime import engine as engine_module

    store = ModelStore(Path(str(tmp_path)) / "store")
    card = publish_tiny(store, seed=4)
    options = EngineOptions(batch_sizes=(1, 2), device_target="CPU")
    missing = dict(engine_module._BACKENDS)
    missing["onnxruntime"] = ("service.no_such_backend", "build")
    missing["openvino"] = ("service.no_such_backend", "build")
    monkeypatch.setattr(engine_module, "_BACKENDS", missing)
    monkeypatch.setattr(engine_module, "resolve_kind", lambda kind, device: "onnxruntime" if kind == "auto" else kind)
    assert isinstance(build_engine("auto", card, store, options), MindSporeEngine)
    with pytest.raises(RuntimeError, match="not available"):
        build_engine("onnxruntime", card, store, options)
