"""OpenVINO's reduced precisions on a real trained model: static int8 (NNCF) and bf16, behind the accuracy gate.

The digits model (trained, in tests/service/data) is measured on its 360 held-out digits and on photographs;
what each engine runs is asked of OpenVINO, so the same tests hold on AVX2-only and bf16/VNNI CPUs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service import digits_tiny
from vitserve.benchmarks.precision_bench import photos, run_precision_bench
from vitserve.benchmarks.precision_check import PrecisionUnavailable, measure_precision
from vitserve.model_store import ModelStore
from vitserve.model_store.card import Card
from vitserve.runtime import export_cache
from vitserve.runtime.cpu_precision import matmul_precisions, native_bf16
from vitserve.runtime.engine import EngineOptions, build_engine
from vitserve.runtime.export_cache import MissingArtefact, cached_static_int8, static_int8_path
from vitserve.runtime.openvino_engine import OpenVinoEngine, openvino_engine_for
from vitserve.vit.preprocess import preprocess


@pytest.fixture
def digits_version(tmp_path: Path) -> tuple[ModelStore, Card]:
    store = ModelStore(tmp_path / "store")
    card = store.publish(
        "digits-tiny",
        digits_tiny.trained_state(),
        digits_tiny.CONFIG,
        digits_tiny.DATA,
        digits_tiny.LABELS,
        lineage={"source": "tests/service/digits_tiny.py"},
    )
    return store, card


def test_static_int8_is_not_made_without_calibration_images(digits_version: tuple[ModelStore, Card]) -> None:
    store, card = digits_version
    with pytest.raises(MissingArtefact, match="--precision int8-static"):
        openvino_engine_for(store, card, batch_sizes=(1,), precision="int8-static", threads=1)


@pytest.mark.slow
def test_static_int8_is_measured_on_held_out_digits_and_served_in_int8(
    digits_version: tuple[ModelStore, Card],
) -> None:
    store, card = digits_version
    images, labels, val = digits_tiny.digits()
    train_images = [image for image, v in zip(images, val, strict=True) if not v]
    val_images = [image for image, v in zip(images, val, strict=True) if v]
    # Calibrated on training digits, judged on the held-out ones: the gate never sees its calibration set.
    cached_static_int8(store, card, preprocess(train_images[:64], card.data))
    digits = measure_precision(
        store, card, val_images, labels=labels[val], dataset="digits-val", precision="int8-static", threads=1
    )
    assert digits["images"] == 360 and digits["top1_fp32"] > 0.75  # a real classifier, its held-out digits
    # Measured 96-97 % on this width-64, depth-2 model whatever NNCF's options (presets, SmoothQuant, attention
    # kept in float): under the 99 % gate, so set-precision refuses it without --force. Not noise, though:
    assert digits["top1_agreement"] >= 0.9 and abs(digits["top1_delta"]) <= 0.05
    on_photos = measure_precision(store, card, photos(), dataset="skimage-photos", precision="int8-static", threads=1)
    assert on_photos["images"] == 8 and 0 <= on_photos["top1_agreement"] <= 1
    metrics = store.resolve(card.ref).metrics
    assert metrics["digits-val@int8-static"] == digits  # recorded in the card, for set-precision's gate
    path = static_int8_path(store, card)
    assert path.parent == store.version_dir(card) / "cache" and path.with_suffix(".bin").is_file()
    assert export_cache.is_fresh(path, export_cache.expected_manifest(card, "int8-static"))

    served = store.set_serving(card.ref, precision="int8-static")
    engine = build_engine("auto", served, store, EngineOptions(batch_sizes=(1, 2), threads=1))
    assert isinstance(engine, OpenVinoEngine) and engine.path == path
    assert engine.precision == "int8"  # OpenVINO's executable graph runs its matmuls on 8-bit integers


@pytest.mark.slow
def test_bf16_is_measured_only_where_the_cpu_runs_it(digits_version: tuple[ModelStore, Card]) -> None:
    store, card = digits_version
    if not native_bf16():  # an AVX2-only CPU (or ONEDNN_MAX_CPU_ISA=AVX2): bf16 would be f32, so no number
        with pytest.raises(PrecisionUnavailable, match="bf16 runs as fp32"):
            run_precision_bench(store, card.ref, precision="bf16", threads=1)
        assert not any(name.endswith("@bf16") for name in store.resolve(card.ref).metrics)
        return
    results = run_precision_bench(store, card.ref, precision="bf16", threads=1)
    digits = results["digits-val"]
    assert digits["images"] > 300 and digits["top1_fp32"] > 0.5  # a real classifier (chance: 0.1), held-out digits
    # Measured 98.9 % (4 of 359 near-ties flip) on an AVX-512 bf16 CPU: this width-64, depth-2 model's margins
    # are thin, so the gate may refuse it. The gate's verdict is set-precision's; here, that the figure is real:
    assert digits["top1_agreement"] >= 0.95 and abs(digits["top1_delta"]) <= 0.02
    assert store.resolve(card.ref).metrics["digits-val@bf16"] == digits
    assert store.resolve(card.ref).metrics["skimage-photos@bf16"] == results["skimage-photos"]

    served = store.set_serving(card.ref, precision="bf16")  # what the gate allows (or --force) leads to
    engine = build_engine("auto", served, store, EngineOptions(batch_sizes=(1,), threads=1))
    assert isinstance(engine, OpenVinoEngine) and engine.precision == "bf16"
    assert "bf16" in matmul_precisions(engine.compiled)  # the executable graph, not only the hint
