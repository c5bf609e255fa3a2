"""``vitserve export``: the Triton and OVMS layouts, and the exported graphs run and match the MindSpore model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.tiny import LABELS, TINY, publish_tiny, random_state
from tests.vit.photos import photo
from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_REFUSED
from vitserve.admin.main import main
from vitserve.model_store import ModelStore
from vitserve.vit.config import DataConfig
from vitserve.vit.preprocess import preprocess

PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.fixture(scope="module")
def exported_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-store")
    publish_tiny(ModelStore(root), name="tiny", seed=3)
    return root


def export(capsys: pytest.CaptureFixture[str], store: Path, *args: str | Path) -> tuple[int, str, str]:
    code = main(["export", *map(str, args), "--store", str(store)])
    out, err = capsys.readouterr()
    return code, out, err


def mindspore_logits(batch: np.ndarray) -> np.ndarray:
    import mindspore as ms

    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    model = create_model(TINY)
    load_state_dict(model, random_state(3))
    model.set_train(False)
    return model(ms.Tensor(batch)).asnumpy()


def inputs_from(version_dir: Path) -> np.ndarray:
    """Real photos preprocessed as the exported preprocessing.json says (what a foreign client would do)."""
    spec = json.loads((version_dir / "preprocessing.json").read_text())
    data = DataConfig.from_dict({k: spec[k] for k in ("img_size", "crop_pct", "interpolation", "mean", "std")})
    return preprocess([photo(name) for name in PHOTOS], data)


def test_onnx_export_is_a_triton_repository_that_runs(
    exported_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    code, out, _ = export(capsys, exported_store, "tiny", "--format", "onnx", "--out", tmp_path / "repo", "--json")
    assert code == 0
    result = json.loads(out)
    model_dir = tmp_path / "repo" / "tiny"
    version_dir = model_dir / "1"
    assert Path(result["version_dir"]) == version_dir
    for name in ("config.pbtxt", "labels.txt", "1/model.onnx", "1/labels.json", "1/preprocessing.json", "1/card.json"):
        assert (model_dir / name).is_file(), name
    config = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and f'name: "{result["input"]}"' in config
    assert "dims: [ 3, 32, 32 ]" in config and "dims: [ 10 ]" in config and 'label_filename: "labels.txt"' in config
    assert (model_dir / "labels.txt").read_text().splitlines() == LABELS
    assert json.loads((version_dir / "labels.json").read_text()) == LABELS
    batch = inputs_from(version_dir)
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run([result["output"]], {result["input"]: batch})
    np.testing.assert_allclose(logits, mindspore_logits(batch), atol=1e-4, rtol=1e-4)


def test_openvino_export_is_an_ovms_repository_that_runs(
    exported_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import openvino as ov

    repo = tmp_path / "ovms"
    code, _, _ = export(capsys, exported_store, "tiny:1", "--format", "openvino", "--out", repo, "--json")
    assert code == 0
    version_dir = repo / "tiny" / "1"
    assert (version_dir / "model.xml").is_file() and (version_dir / "model.bin").is_file()
    config = json.loads((repo / "config.json").read_text())
    assert config == {"model_config_list": [{"config": {"name": "tiny", "base_path": "tiny"}}]}
    batch = inputs_from(version_dir)
    compiled = ov.Core().compile_model(str(version_dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled({0: batch})[compiled.output(0)]
    np.testing.assert_allclose(logits, mindspore_logits(batch), atol=1e-4, rtol=1e-4)


def test_int8_onnx_runs_and_mostly_agrees(
    exported_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    code, out, _ = export(capsys, exported_store, "tiny", "--precision", "int8", "--out", tmp_path / "q", "--json")
    assert code == 0
    result = json.loads(out)
    batch = inputs_from(Path(result["version_dir"]))
    session = ort.InferenceSession(str(Path(result["version_dir"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {result["input"]: batch})
    assert logits.shape == (len(PHOTOS), 10) and np.isfinite(logits).all()
    assert np.abs(logits - mindspore_logits(batch)).max() < 0.5  # dynamic int8 weights: close, not exact


def test_refusals_and_missing_models_have_their_exit_codes(
    exported_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert export(capsys, exported_store, "absent", "--out", out)[0] == EXIT_NOT_FOUND
    code, _, err = export(capsys, exported_store, "tiny", "--format", "openvino", "--precision", "int8", "--out", out)
    assert code == EXIT_REFUSED and "--format onnx" in err
    assert export(capsys, exported_store, "tiny", "--out", out)[0] == 0
    code, _, err = export(capsys, exported_store, "tiny", "--out", out)
    assert code == EXIT_REFUSED and "--force" in err
    assert export(capsys, exported_store, "tiny", "--out", out, "--force")[0] == 0
