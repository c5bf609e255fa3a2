"""The CPU engines: ONNX export parity with MindSpore (exact GELU), the export cache, int8 accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
import onnx
import pytest

from tests.service import digits_tiny
from tests.tiny import TINY
from vitserve.benchmarks.precision_check import measure_precision
from vitserve.model_store import ModelStore
from vitserve.model_store.card import Card
from vitserve.runtime import export_cache
from vitserve.runtime.engine import EngineOptions, build_engine
from vitserve.runtime.export_cache import cache_path, cached_onnx
from vitserve.runtime.onnx_engine import OnnxRuntimeEngine, engine_options, onnxruntime_engine_for
from vitserve.runtime.onnx_export import export_onnx
from vitserve.vit.checkpoint import StateDict, load_state_dict, state_dict
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.files import sha256_file
from vitserve.vit.model import VisionTransformer
from vitserve.vit.preprocess import preprocess

SHAPE = (3, 32, 32)


def scaled_state(config: ViTConfig, seed: int) -> StateDict:
    """Random weights large enough that logits are O(1) and GELU works in its curved range (|x| ~ 1),
    where exact and tanh GELU differ visibly in the logits."""
    rng = np.random.default_rng(seed)
    state = state_dict(VisionTransformer(config))
    return {
        k: (rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 0.1)).astype(np.float32) for k, v in state.items()
    }


def mindspore_logits(config: ViTConfig, state: StateDict, x: np.ndarray, *, tanh_gelu: bool = False) -> np.ndarray:
    model = VisionTransformer(config)
    load_state_dict(model, state)
    if tanh_gelu:
        for block in model.blocks:
            block.mlp.act = ms.nn.GELU(approximate=True)
    model.set_train(False)
    return model(ms.Tensor(x)).asnumpy()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StateDict]:
    state = scaled_state(TINY, seed=0)
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    export_onnx(TINY, state, path)
    return path, state


@pytest.mark.parametrize("batch", [1, 3, 8])  # the graph was traced at 5: every other size needs the symbolic axis
def test_onnx_runtime_matches_mindspore_exact_gelu(tiny_export: tuple[Path, StateDict], batch: int) -> None:
    path, state = tiny_export
    x = np.random.default_rng(batch).standard_normal((batch, *SHAPE)).astype(np.float32)
    exact = mindspore_logits(TINY, state, x)
    tanh = mindspore_logits(TINY, state, x, tanh_gelu=True)
    got = OnnxRuntimeEngine(path, input_shape=SHAPE).run(x)
    assert got.shape == (batch, TINY.num_classes)
    assert np.abs(exact).max() > 0.5  # logits large enough for the tolerance to mean something
    np.testing.assert_allclose(got, exact, atol=1e-4, rtol=0)
    # The export is the exact form, not the tanh approximation it was traced with: its error is far smaller.
    assert np.abs(got - exact).max() * 10 < np.abs(tanh - exact).max()


def test_exported_graph_has_erf_gelu_and_a_symbolic_batch(tiny_export: tuple[Path, StateDict]) -> None:
    graph = onnx.load(str(tiny_export[0])).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Erf") == TINY.depth and "Tanh" not in ops
    # LayerNorm's variance as a mean of squares (two per block and the final one), the form the runtimes fuse:
    assert ops.count("Pow") == ops.count("ReduceMean") // 2 == 2 * TINY.depth + 1 and "ReduceSumSquare" not in ops
    # Dense layers as MatMul on the token tensor (qkv, proj, fc1, fc2 per block; two attention MatMuls per
    # block), the classifier head alone on pooled features as Gemm:
    assert ops.count("MatMul") == 6 * TINY.depth and ops.count("Gemm") == 1
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_openvino_runs_the_same_export(tiny_export: tuple[Path, StateDict]) -> None:
    from vitserve.runtime.openvino_engine import OpenVinoEngine

    path, state = tiny_export
    x = np.random.default_rng(7).standard_normal((2, *SHAPE)).astype(np.float32)
    engine = OpenVinoEngine(path, input_shape=SHAPE, batch_sizes=(1, 2), threads=1)
    engine.warmup()
    assert engine.precision == "fp32"  # pinned: unhinted, OpenVINO would run bf16 on a bf16 CPU
    np.testing.assert_allclose(engine.run(x), mindspore_logits(TINY, state, x), atol=1e-4, rtol=0)
    kernels = [op.get_rt_info()["layerType"].astype(str) for op in engine.compiled.get_runtime_model().get_ops()]
    assert kernels.count("MVN") == 2 * TINY.depth + 1  # every LayerNorm one fused kernel


def test_openvino_bf16_runs_bf16_exactly_where_the_cpu_has_it(tiny_export: tuple[Path, StateDict]) -> None:
    from vitserve.runtime.cpu_precision import native_bf16
    from vitserve.runtime.openvino_engine import OpenVinoEngine

    path, state = tiny_export
    x = np.random.default_rng(8).standard_normal((2, *SHAPE)).astype(np.float32)
    engine = OpenVinoEngine(path, input_shape=SHAPE, threads=1, precision="bf16")
    assert engine.precision == ("bf16" if native_bf16() else "fp32")  # asked of OpenVINO, not assumed
    # bf16 keeps 8 mantissa bits: ~1e-2 on these logits; fp32 differs from MindSpore in summation order only.
    atol = 3e-2 if engine.precision == "bf16" else 1e-4
    np.testing.assert_allclose(engine.run(x), mindspore_logits(TINY, state, x), atol=atol, rtol=0)


# --- the cache next to a store version ------------------------------------------------------------------


@pytest.fixture
def published(tmp_path: Path) -> tuple[ModelStore, Card, StateDict]:
    store = ModelStore(tmp_path / "store")
    state = scaled_state(TINY, seed=1)
    card = store.publish(
        "tiny", state, TINY, DataConfig(img_size=32), [str(i) for i in range(10)], lineage={"source": "test"}
    )
    return store, card, state


def forbid_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again although the cache was fresh")

    monkeypatch.setattr("vitserve.runtime.onnx_export.export_onnx", fail)


def test_openvino_keeps_one_blob_folder_per_precision_hint(tiny_export: tuple[Path, StateDict], tmp_path: Path) -> None:
    """OpenVINO names a compiled blob after the model, not the hint: compiled at f32 and bf16 into one folder, two
    processes replaced each other's file and one failed to start (3 of 20 trials of concurrent compiles)."""
    from vitserve.runtime.openvino_engine import OpenVinoEngine

    path, _ = tiny_export
    root = tmp_path / "openvino"
    root.mkdir()
    (root / "18020022523106916162.blob").write_bytes(b"left by the one-folder layout")
    engines = {
        p: OpenVinoEngine(path, input_shape=SHAPE, threads=1, precision=p, cache_dir=root) for p in ("fp32", "bf16")
    }
    folders = {"fp32": "f32", "bf16": "bf16" if engines["bf16"].precision == "bf16" else "f32"}  # f32 without bf16
    assert not list(root.glob("*.blob"))
    assert sorted(d.name for d in root.iterdir() if d.is_dir()) == sorted(set(folders.values()))
    assert all(len(list((root / folder).glob("*.blob"))) == 1 for folder in folders.values())


def test_cache_is_reused_across_engines(published: tuple[ModelStore, Card, StateDict], monkeypatch) -> None:
    store, card, state = published
    path = cached_onnx(store, card)
    assert path.parent == store.version_dir(card) / "cache" and card.sha256[:16] in path.name
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["weights_sha256"] == card.sha256 and manifest["file_sha256"] == sha256_file(path)
    forbid_export(monkeypatch)
    options = cpu_options(batch_sizes=(1, 2), precision="auto")
    engine = build_engine("onnxruntime", card, store, options)
    x = np.random.default_rng(3).standard_normal((2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), mindspore_logits(TINY, state, x), atol=1e-4, rtol=0)
    assert build_engine("openvino", card, store, options).run(x).shape == (2, 10)


@pytest.mark.parametrize("damage", ["library_version", "corrupt_bytes", "missing_manifest"])
def test_stale_or_damaged_cache_is_exported_again(published: tuple[ModelStore, Card, StateDict], damage: str) -> None:
    store, card, _ = published
    path = cached_onnx(store, card)
    manifest_path = path.with_suffix(".json")
    if damage == "library_version":
        record = json.loads(manifest_path.read_text())
        manifest_path.write_text(json.dumps({**record, "mindspore": "0.0.1"}))
    elif damage == "corrupt_bytes":
        path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    else:
        manifest_path.unlink()
    assert not export_cache.is_fresh(path, export_cache.expected_manifest(card, "fp32"))
    assert cached_onnx(store, card) == path
    assert export_cache.is_fresh(path, export_cache.expected_manifest(card, "fp32"))
    assert json.loads(manifest_path.read_text())["mindspore"] == ms.__version__


def test_exports_of_other_weights_or_formats_are_removed(published: tuple[ModelStore, Card, StateDict]) -> None:
    store, card, _ = published
    old = cache_path(store, card.replace(sha256="0" * 64), "fp32")
    old.write_bytes(b"an export of weights this version no longer has")
    old.with_suffix(".json").write_text("{}")
    cached_onnx(store, card)
    assert not old.exists() and not old.with_suffix(".json").exists()


# --- reduced precision on a real trained model ----------------------------------------------------------


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_images(tmp_path: Path) -> None:
    """The digits model (trained, in data/) on its 360 held-out digits: int8 must keep ≥ 99 % of the fp32
    top-1 predictions and lose at most a point of accuracy. Photos are measured too. Both land in the card."""
    from vitserve.benchmarks.precision_bench import photos

    images, labels, val = digits_tiny.digits()
    store = ModelStore(tmp_path / "store")
    card = store.publish(
        "digits-tiny",
        digits_tiny.trained_state(),
        digits_tiny.CONFIG,
        digits_tiny.DATA,
        digits_tiny.LABELS,
        lineage={"source": "tests/service/digits_tiny.py"},
    )
    val_images = [image for image, v in zip(images, val, strict=True) if v]
    digits = measure_precision(store, card, val_images, labels=labels[val], dataset="digits-val", threads=1)
    assert digits["images"] == 360
    assert digits["top1_fp32"] > 0.75  # it is a real classifier, not noise
    assert digits["top1_agreement"] >= 0.99
    assert abs(digits["top1_delta"]) <= 0.01
    on_photos = measure_precision(store, card, photos(), dataset="skimage-photos", threads=1)
    assert on_photos["images"] == 8
    # Photos carry no labels: the agreement is the share of equal argmaxes, recomputed here from both engines.
    x = preprocess(photos(), card.data)
    fp32, int8 = (
        onnxruntime_engine_for(store, card, batch_sizes=(8,), precision=p, threads=1) for p in ("fp32", "int8")
    )
    agreeing = np.mean(fp32.run(x).argmax(axis=1) == int8.run(x).argmax(axis=1))
    assert on_photos["top1_agreement"] == pytest.approx(agreeing)
    metrics = store.resolve(card.ref).metrics
    assert metrics["digits-val@int8"] == digits and metrics["skimage-photos@int8"] == on_photos


# --- engine selection -----------------------------------------------------------------------------------


def test_auto_picks_the_fastest_cpu_backend_and_mindspore_elsewhere() -> None:
    from vitserve.runtime.engine import resolve_kind

    assert resolve_kind("auto", "CPU") == "openvino"  # benchmarks/README.md: fastest fp32 on CPU here
    assert resolve_kind("auto", "Ascend") == resolve_kind("auto", "GPU") == "mindspore"
    assert resolve_kind("onnxruntime", "CPU") == "onnxruntime"


def test_the_service_does_not_import_cpu_engine_packages_until_chosen() -> None:
    """The Ascend image need not carry onnx/onnxruntime/openvino: importing the service must not load them."""
    import subprocess
    import sys

    code = (
        "import sys, vitserve.service.app, vitserve.runtime.engine, vitserve.runtime.onnx_engine\n"
        "import vitserve.runtime.openvino_engine, vitserve.runtime.onnx_export, vitserve.runtime.quantize\n"
        "import vitserve.runtime.cpu_precision\n"
        "loaded = sorted(m for m in ('onnx', 'onnxruntime', 'openvino') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_int8_opt_in_is_served_by_onnx_runtime_under_openvino(
    published: tuple[ModelStore, Card, StateDict],
) -> None:
    store, card, _ = published
    engine = build_engine("auto", card, store, cpu_options(precision="int8"))
    assert isinstance(engine, OnnxRuntimeEngine) and "-int8-" in engine.path.name


def test_a_version_opted_into_int8_gets_the_int8_engine_under_auto(
    published: tuple[ModelStore, Card, StateDict],
) -> None:
    store, card, _ = published
    auto = cpu_options(precision="auto")
    assert engine_options(card, auto) == (1, "fp32")  # no opt-in: fp32
    card = store.set_serving(card.ref, precision="int8")
    assert engine_options(card, auto) == (1, "int8")
    assert engine_options(card, cpu_options(precision="fp32")) == (1, "fp32")  # the service's setting wins
    engine = build_engine("auto", store.resolve(card.ref), store, auto)  # the card as the service reads it
    assert isinstance(engine, OnnxRuntimeEngine) and "-int8-" in engine.path.name and engine.threads == 1
    x = np.random.default_rng(5).standard_normal((1, *SHAPE)).astype(np.float32)
    assert engine.run(x).shape == (1, TINY.num_classes)


PRECISIONS = ("fp32", "int8")


def cpu_options(**overrides: Any) -> EngineOptions:
    """Options for a CPU engine: one thread, one bucket, the given overrides on top."""
    return EngineOptions(**{"device_target": "CPU", "threads": 1, "batch_sizes": (1,), **overrides})
