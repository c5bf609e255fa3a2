"""Parity: checkpoints from each source format, converted, give the PyTorch reference's logits.

Random-weight references (timm; Hugging Face for the HF format) are saved as MAE ``{'model': sd}`` .pth,
timm .pth and .safetensors, HF .safetensors + config.json, and a MindFormers .ckpt made by converting
back; each is converted through ``convert_file`` (or the CLI) and run in GRAPH_MODE and PyNative.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from tests.tiny import TINY
from tests.vit import torch_refs
from vitserve.vit.checkpoint import load_checkpoint_file, load_state_dict, save_checkpoint
from vitserve.vit.config import DataConfig, ViTConfig, get_config
from vitserve.vit.convert import convert_file, from_vitserve_to_mindformers, read_weights, to_vitserve
from vitserve.vit.model import VisionTransformer, create_model

TOLERANCE = 1e-4  # max abs logit difference, fp32
AVG = TINY.replace(global_pool="avg")
TOKEN = TINY.replace(global_pool="token")
HF = TINY.replace(global_pool="token", layer_norm_eps=1e-12)  # HF's own default eps


@dataclass(frozen=True)
class Source:
    path: Path
    fmt: str  # what detect_format must say
    config: ViTConfig | None  # passed to convert_file (None: the file or its config.json must say)
    expected: ViTConfig  # the converted config
    reference: np.ndarray  # PyTorch logits on INPUT


def batch(config: ViTConfig, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, 3, config.img_size, config.img_size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Source]:
    root = tmp_path_factory.mktemp("sources")
    x = batch(AVG, 2)
    avg, token, hf = torch_refs.timm_vit(AVG, seed=1), torch_refs.timm_vit(TOKEN, seed=2), torch_refs.hf_vit(HF, 3)
    (root / "hf").mkdir()
    sources = {
        "mae .pth": Source(torch_refs.save_mae_pth(avg, root / "mae.pth"), "mae", AVG, AVG, torch_refs.logits(avg, x)),
        "timm .pth": Source(
            torch_refs.save_timm_pth(token, root / "timm.pth"), "timm", TOKEN, TOKEN, torch_refs.logits(token, x)
        ),
        "timm .safetensors": Source(
            torch_refs.save_safetensors(avg, root / "timm.safetensors"), "timm", AVG, AVG, torch_refs.logits(avg, x)
        ),
        "hf .safetensors": Source(torch_refs.save_hf(hf, root / "hf"), "hf", None, HF, torch_refs.logits(hf, x)),
    }
    # MindFormers' layout, made the way its users get one: our weights written out by the reverse table.
    mindformers = from_vitserve_to_mindformers(convert_file(root / "mae.pth", config=AVG).state)
    save_checkpoint(mindformers, root / "vit_base_p16.ckpt")
    sources["mindformers .ckpt"] = Source(
        root / "vit_base_p16.ckpt", "mindformers", AVG, AVG, torch_refs.logits(avg, x)
    )
    return sources


@pytest.fixture(scope="module")
def model_for() -> Callable[[ViTConfig], VisionTransformer]:
    """One eval-mode model per (mode, config) for the module: GRAPH_MODE compiles once per model and shape,
    and loading new weights into it does not recompile."""
    cache: dict[tuple[int, ViTConfig], VisionTransformer] = {}

    def get(config: ViTConfig) -> VisionTransformer:
        key = (ms.get_context("mode"), config)
        if key not in cache:
            cache[key] = create_model(config)
            cache[key].set_train(False)
        return cache[key]

    return get


def run(model: VisionTransformer, x: np.ndarray) -> np.ndarray:
    return model(ms.Tensor(x)).asnumpy()


@pytest.mark.parametrize("name", ["mae .pth", "timm .pth", "timm .safetensors", "hf .safetensors", "mindformers .ckpt"])
def test_tiny_parity(
    ms_mode: str,
    name: str,
    tiny_sources: dict[str, Source],
    model_for: Callable[[ViTConfig], VisionTransformer],
    record_property: Callable[[str, object], None],
) -> None:
    source = tiny_sources[name]
    converted = convert_file(source.path, config=source.config)
    assert converted.source["format"] == source.fmt
    assert converted.config == source.expected
    model = model_for(converted.config)
    load_state_dict(model, converted.state)
    diff = float(np.abs(run(model, batch(AVG, 2)) - source.reference).max())
    record_property("max_abs_diff", diff)
    print(f"parity tiny {name} {ms_mode}: max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


def test_mindformers_layout_round_trips(tiny_sources: dict[str, Source]) -> None:
    ours = convert_file(tiny_sources["mae .pth"].path, config=AVG).state
    raw = read_weights(tiny_sources["mindformers .ckpt"].path)
    assert "vit.blocks.1.attention.dense3.weight" in raw and "vit.cls_tokens" in raw
    # MindFormers stores its projection/mapping weights (in, out): (D, 4D) for mapping, ours is (4D, D).
    assert raw["vit.blocks.0.output.mapping.weight"].shape == (32, 128)
    back = to_vitserve(raw)
    assert back.keys() == ours.keys()
    for key, value in ours.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    again = from_vitserve_to_mindformers(back)
    assert all(np.array_equal(again[k], raw[k]) for k in raw) and again.keys() == raw.keys()


def test_img_size_resamples_pos_embed_like_timm(pynative_mode: None, tiny_sources: dict[str, Source]) -> None:
    """Converting a 32 px checkpoint for 48 px matches timm's model at 48 px with the pos_embed resampled the
    way MAE's interpolate_pos_embed (and HF) do it: torch bicubic without antialiasing. (timm's own loader
    defaults to antialias=True, a different kernel, even when upsampling.)"""
    timm = torch_refs.import_timm()
    import torch

    source = tiny_sources["mae .pth"]
    converted = convert_file(source.path, config=AVG, img_size=48)
    assert converted.config.img_size == 48 and converted.data.img_size == 48
    weights = torch.load(source.path, weights_only=True)["model"]
    weights["pos_embed"] = timm.layers.resample_abs_pos_embed(weights["pos_embed"], (6, 6), antialias=False)
    reference = torch_refs.timm_vit(converted.config)
    reference.load_state_dict(weights)
    x = batch(converted.config, 2)
    model = create_model(converted.config)
    load_state_dict(model, converted.state)
    model.set_train(False)
    diff = float(np.abs(run(model, x) - torch_refs.logits(reference, x)).max())
    print(f"parity tiny mae .pth at 48 px (resampled pos_embed): max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


@pytest.mark.slow
def test_cli_converts_mae_and_writes_mindformers(tmp_path: Path, tiny_sources: dict[str, Source]) -> None:
    """The console script end to end: MAE .pth + --config JSON → DIR whose model matches the reference,
    and --to mindformers writes a MindFormers .ckpt that converts back to the same logits."""
    source = tiny_sources["mae .pth"]
    vitserve = Path(sys.executable).with_name("vitserve")
    out = tmp_path / "converted"
    cmd = [
        str(vitserve),
        "convert",
        str(source.path),
        "--config",
        AVG.to_json(),
        "--to",
        "mindformers",
        "--out",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "data.json", "mindformers.ckpt", "model.ckpt", "source.json"
    ]  # fmt: skip
    assert ViTConfig.from_json((out / "config.json").read_text()) == AVG
    assert DataConfig.from_dict(json.loads((out / "data.json").read_text())) == DataConfig(img_size=32)
    lineage = json.loads((out / "source.json").read_text())
    assert lineage["format"] == "mae" and len(lineage["sha256"]) == 64
    previous = ms.get_context("mode")
    try:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        model = create_model(AVG)
        model.set_train(False)
        x = batch(AVG, 2)
        for state in (
            load_checkpoint_file(out / "model.ckpt"),
            convert_file(out / "mindformers.ckpt", config=AVG).state,
        ):
            load_state_dict(model, state)
            assert float(np.abs(run(model, x) - source.reference).max()) <= TOLERANCE
    finally:
        ms.set_context(mode=previous)


@pytest.mark.slow
def test_base_parity_graph_mode(graph_mode: None, tmp_path: Path) -> None:
    """ViT-B/16 at 224 (the seed's architecture): timm .pth, MAE .pth and MindFormers .ckpt on one compiled
    mean-pool model (batch 1: MindSpore runs ViT-B at ~2 img/s here and compiles it in ~15 s). The HF
    format's table is the same at every width; its parity is proven on the tiny config."""
    base = get_config("vit_base_patch16_224", drop_path_rate=0.0)
    x = batch(base, 1)
    reference = torch_refs.timm_vit(base, seed=4)
    expected = torch_refs.logits(reference, x)
    paths = {
        "timm .pth": torch_refs.save_timm_pth(reference, tmp_path / "timm.pth"),
        "mae .pth": torch_refs.save_mae_pth(reference, tmp_path / "mae.pth"),
    }
    del reference
    model = create_model(base)
    model.set_train(False)
    diffs = {}
    for name, path in paths.items():
        converted = convert_file(path)  # 768 wide → 12 heads from the table of known widths
        assert converted.config == base
        load_state_dict(model, converted.state)
        diffs[name] = float(np.abs(run(model, x) - expected).max())
        if name == "mae .pth":
            save_checkpoint(from_vitserve_to_mindformers(converted.state), tmp_path / "mf.ckpt")
    load_state_dict(model, convert_file(tmp_path / "mf.ckpt").state)
    diffs["mindformers .ckpt"] = float(np.abs(run(model, x) - expected).max())
    for name, diff in diffs.items():
        print(f"parity base {name} graph: max abs diff {diff:.2e}")
    assert max(diffs.values()) <= TOLERANCE, diffs
