"""Conversion tables and their errors, on synthetic state dicts (no PyTorch model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny import TINY, random_state
from vitserve.admin.errors import EXIT_NOT_FOUND
from vitserve.admin.main import main as cli_main
from vitserve.vit.checkpoint import CheckpointMismatch, save_checkpoint
from vitserve.vit.config import INCEPTION_DATA, DataConfig, ViTConfig, get_config
from vitserve.vit.convert import (
    convert_file,
    default_data_config,
    detect_format,
    from_vitserve_to_mindformers,
    infer_config,
    read_weights,
    to_vitserve,
)
from vitserve.vit.convert_io import config_from_hf, labels_from_hf
from vitserve.vit.convert_tables import HF_RULES, rename_to_theirs
from vitserve.vit.model import parameter_shapes

AVG = TINY
TOKEN = TINY.replace(global_pool="token")


def as_timm(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in state.items()}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_parameter_shapes_match_an_initialised_model() -> None:
    """``parameter_shapes`` builds the model without data; a fully initialised one has the same list."""
    from vitserve.vit.checkpoint import state_dict
    from vitserve.vit.model import create_model

    for config in (AVG, TOKEN, AVG.replace(qkv_bias=False, num_classes=0)):
        model_shapes = {k: v.shape for k, v in state_dict(create_model(config)).items()}
        assert parameter_shapes(config) == model_shapes


@pytest.mark.parametrize("config", [AVG, TOKEN], ids=["avg", "token"])
def test_timm_and_mae_tables(config: ViTConfig) -> None:
    state = random_state(0, config)
    timm = as_timm(state)
    assert detect_format(timm) == "timm"
    assert_same(to_vitserve(timm), state)
    mae = {f"model.{k}": v for k, v in timm.items()}
    assert detect_format(mae) == "mae"
    assert_same(to_vitserve(mae), state)


def test_hf_table_fuses_query_key_value_as_rows() -> None:
    state = random_state(0, TOKEN)
    hf = rename_to_theirs(state, HF_RULES)
    assert detect_format(hf) == "hf"
    d = TOKEN.embed_dim
    qkv = state["blocks.1.attn.qkv.weight"]
    attn = "vit.encoder.layer.1.attention.attention"
    np.testing.assert_array_equal(hf[f"{attn}.query.weight"], qkv[:d])
    np.testing.assert_array_equal(hf[f"{attn}.key.weight"], qkv[d : 2 * d])
    np.testing.assert_array_equal(hf[f"{attn}.value.bias"], state["blocks.1.attn.qkv.bias"][2 * d :])
    assert "vit.layernorm.weight" in hf and "classifier.weight" in hf
    assert_same(to_vitserve(hf), state)


def test_mindformers_table_transposes_only_in_out_weights() -> None:
    state = random_state(0, AVG)
    mf = from_vitserve_to_mindformers(state)
    assert detect_format(mf) == "mindformers"
    block = "vit.blocks.0"
    np.testing.assert_array_equal(mf[f"{block}.attention.projection.weight"], state["blocks.0.attn.proj.weight"].T)
    np.testing.assert_array_equal(mf[f"{block}.output.mapping.weight"], state["blocks.0.mlp.fc1.weight"].T)
    np.testing.assert_array_equal(mf[f"{block}.output.projection.weight"], state["blocks.0.mlp.fc2.weight"].T)
    np.testing.assert_array_equal(mf[f"{block}.attention.dense2.weight"], state["blocks.0.attn.qkv.weight"][32:64])
    np.testing.assert_array_equal(mf["head.weight"], state["head.weight"])  # (out, in) on both sides
    assert set(mf) >= {"vit.cls_tokens", "vit.fc_norm.gamma", f"{block}.layernorm1.beta"}
    assert_same(to_vitserve(mf), state)


def test_token_pool_has_no_mindformers_form() -> None:
    with pytest.raises(ValueError, match="no final norm"):
        from_vitserve_to_mindformers(random_state(0, TOKEN))


def test_ours_is_detected_and_kept() -> None:
    state = random_state(0, AVG)
    assert detect_format(state) == "vitserve"
    assert_same(to_vitserve(state), state)


def test_unexpected_key_is_named() -> None:
    timm = as_timm(random_state(0, AVG)) | {"blocks.0.ls1.gamma": np.ones(32, np.float32)}  # LayerScale: not ours
    with pytest.raises(CheckpointMismatch, match=r"unexpected keys: blocks\.0\.ls1\.gamma") as err:
        to_vitserve(timm)
    assert err.value.unexpected == ["blocks.0.ls1.gamma"]


def test_missing_fused_part_is_named_in_the_source_spelling() -> None:
    hf = rename_to_theirs(random_state(0, TOKEN), HF_RULES)
    del hf["vit.encoder.layer.0.attention.attention.value.weight"]
    with pytest.raises(CheckpointMismatch, match=r"missing keys: vit\.encoder\.layer\.0\.attention\.attention\.value"):
        to_vitserve(hf)


def test_missing_and_mis_shaped_keys_are_named(tmp_path: Path) -> None:
    state = random_state(0, AVG)
    del state["blocks.1.norm2.beta"]
    state["head.weight"] = state["head.weight"][:5]
    save_checkpoint(state, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointMismatch) as err:
        convert_file(tmp_path / "broken.ckpt", config=AVG)
    message = str(err.value)
    assert "missing keys: blocks.1.norm2.beta" in message
    assert "head.weight (checkpoint (5, 32), model (10, 32))" in message


def test_mae_pretraining_checkpoint_is_refused() -> None:
    raw = {f"model.{k}": v for k, v in as_timm(random_state(0, TOKEN)).items()}
    raw |= {"model.mask_token": np.zeros((1, 1, 16), np.float32), "model.decoder_embed.weight": np.zeros((16, 32))}
    with pytest.raises(ValueError, match="MAE pre-training checkpoint"):
        to_vitserve(raw)


def test_unknown_layouts_and_formats() -> None:
    with pytest.raises(ValueError, match=r"cannot tell the checkpoint's format .*conv1\.weight"):
        detect_format({"conv1.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="unknown checkpoint format 'onnx'; known: auto, timm"):
        to_vitserve(random_state(0, AVG), "onnx")


def test_training_state_is_dropped(tmp_path: Path) -> None:
    import torch

    timm = {k: torch.from_numpy(v) for k, v in as_timm(random_state(0, AVG)).items()}
    optimizer = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    torch.save({"state_dict": timm, "optimizer": optimizer, "epoch": 7}, tmp_path / "train.pth")
    raw = read_weights(tmp_path / "train.pth")
    assert "optimizer.state.0.exp_avg" in raw and "epoch" not in raw  # non-array leaves are skipped
    converted = convert_file(tmp_path / "train.pth", config=AVG)
    assert_same(converted.state, random_state(0, AVG))
    assert converted.source["format"] == "timm"


def test_infer_config_from_shapes() -> None:
    base = get_config("vit_base_patch16_224", drop_path_rate=0.0)
    # Zero-copy arrays of the right shapes: inference reads shapes only.
    state = {k: np.broadcast_to(np.float32(0), s) for k, s in parameter_shapes(base).items()}
    assert infer_config(state) == base
    token = {k: np.broadcast_to(np.float32(0), s) for k, s in parameter_shapes(TOKEN.replace(qkv_bias=False)).items()}
    assert infer_config(token, num_heads=4) == TOKEN.replace(qkv_bias=False)
    with pytest.raises(ValueError, match="cannot infer num_heads for embed_dim 32"):
        infer_config(token)


def test_hf_config_json_is_honoured() -> None:
    hf: dict[str, object] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    hf |= {"intermediate_size": 64}
    hf |= {"image_size": 32, "patch_size": 8, "id2label": {"0": "cat", "1": "dog"}}
    config = config_from_hf(hf)
    assert config.layer_norm_eps == 1e-12  # HF's default when the file does not say
    assert (config.global_pool, config.num_classes, config.mlp_ratio) == ("token", 2, 2.0)
    assert config_from_hf(hf | {"layer_norm_eps": 1e-5}).layer_norm_eps == 1e-5
    assert labels_from_hf(hf) == ["cat", "dog"]
    assert labels_from_hf({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}) is None
    with pytest.raises(ValueError, match="hidden_act 'gelu_new'"):
        config_from_hf(hf | {"hidden_act": "gelu_new"})


def test_data_config_follows_the_source() -> None:
    assert default_data_config("hf", TOKEN) == DataConfig(img_size=32, crop_pct=0.9, mean=INCEPTION_DATA.mean,
                                                           std=INCEPTION_DATA.std)  # fmt: skip
    assert default_data_config("timm", TOKEN).mean == (0.5, 0.5, 0.5)
    assert default_data_config("mae", AVG) == DataConfig(img_size=32)
    assert default_data_config("mindformers", AVG.replace(img_size=64)) == DataConfig(img_size=64)


def test_read_weights_edges(tmp_path: Path) -> None:
    import torch

    with pytest.raises(FileNotFoundError):
        read_weights(tmp_path / "absent.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported weights file w\.onnx"):
        read_weights(tmp_path / "w.onnx")
    # weights_only=True refuses arbitrary pickled objects instead of running them.
    torch.save({"model": {"w": torch.zeros(1)}, "args": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights-only"):
        read_weights(tmp_path / "pickled.pth")
    torch.save({"w": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "bf16.pth")
    assert read_weights(tmp_path / "bf16.pth")["w"].dtype == np.float32


def test_img_size_resamples_pos_embed(tmp_path: Path) -> None:
    save_checkpoint(random_state(0, AVG), tmp_path / "model.ckpt")
    converted = convert_file(tmp_path / "model.ckpt", config=AVG, img_size=64)
    assert converted.config.img_size == 64 and converted.data.img_size == 64
    assert converted.state["pos_embed"].shape == (1, 65, 32)


@pytest.mark.slow  # a fresh interpreter importing MindSpore: ~10 s
def test_model_library_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import vit.convert, vit.convert_io, vit.model; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_cli_writes_the_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mf = from_vitserve_to_mindformers(random_state(0, AVG))
    save_checkpoint(mf, tmp_path / "vit_base_p16.ckpt")
    out = tmp_path / "out"
    args = ["convert", str(tmp_path / "vit_base_p16.ckpt"), "--config", AVG.to_json(), "--img-size", "48"]
    assert cli_main([*args, "--out", str(out)]) == 0
    assert ViTConfig.from_json((out / "config.json").read_text()) == AVG.replace(img_size=48)
    assert json.loads((out / "source.json").read_text())["format"] == "mindformers"
    assert "converted mindformers checkpoint" in capsys.readouterr().out
    # Our own output converts again (format "vitserve", config.json beside it), unchanged.
    again = convert_file(out / "model.ckpt")
    assert again.source["format"] == "vitserve" and again.config == AVG.replace(img_size=48)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["missing.pth"], "weights file not found", EXIT_NOT_FOUND),
        (["model.ckpt", "--config", "vit_gigantic"], "unknown ViT variant 'vit_gigantic'; known: vit_base_p16", 1),
        (["model.ckpt", "--config", '{"depth": 2, "wings": 3}'], "unknown ViTConfig field", 1),
        (
            ["model.ckpt", "--config", "vit_base_p16"],
            "patch_embed.proj.weight (checkpoint (32, 3, 8, 8), model (768,",
            1,
        ),
        (["model.ckpt", "--to", "mindformers", "--config", TOKEN.to_json()], "missing keys: norm.beta", 1),
        (["model.ckpt", "--format", "hf", "--config", AVG.to_json()], "unexpected keys: blocks.0.attn.proj.bias", 1),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, code: int
) -> None:
    save_checkpoint(random_state(0, AVG), tmp_path / "model.ckpt")
    args = [str(tmp_path / args[0]), *args[1:]]
    assert cli_main(["convert", *args, "--out", str(tmp_path / "out")]) == code
    err = capsys.readouterr().err
    assert err.startswith("vitserve convert: error: ") and message in err and err.count("\n") == 1
