"""``vitserve import hf:ORG/NAME`` and ``timm/NAME`` from a Hub cache in huggingface_hub's own layout, offline.

The cache is built here from random tiny weights saved by transformers and timm themselves; the CLI runs with
``HF_HUB_OFFLINE=1`` and ``HF_HOME`` pointing at it, so nothing is downloaded and no test touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.vit.photos import photo
from tests.vit.torch_refs import hf_vit, logits, save_hf, save_safetensors, timm_vit
from vitserve.admin.errors import EXIT_NOT_FOUND
from vitserve.model_store import ModelStore
from vitserve.model_store.hub import HubId, parse_hub_id
from vitserve.vit.config import ViTConfig
from vitserve.vit.preprocess import preprocess

TOKEN = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5, global_pool="token")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMM_ID = "timm/vit_tiny_test.augreg_in21k_ft_in1k"


def put_in_hub_cache(hub_cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """huggingface_hub's layout: models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> → blob, refs/main}."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copyfile(source, repo / "blobs" / digest)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """HF_HOME with an HF ViTForImageClassification and a timm ViT in its hub cache; the torch models too."""
    work = tmp_path_factory.mktemp("hub-src")
    home = tmp_path_factory.mktemp("hf-home")
    hf_model = hf_vit(TOKEN, seed=1)
    save_hf(hf_model, work / "hf", id2label={str(i): f"hf-class-{i}" for i in range(5)})
    put_in_hub_cache(
        home / "hub", "google/vit-tiny-test", {n: work / "hf" / n for n in ("config.json", "model.safetensors")}
    )
    timm_model = timm_vit(TOKEN, seed=2)
    (work / "timm").mkdir()
    save_safetensors(timm_model, work / "timm" / "model.safetensors")
    timm_config = {  # what timm's push_to_hf writes (model_args: the non-default constructor arguments)
        "architecture": "vit_base_patch16_224",
        "num_classes": 5,
        "num_features": 32,
        "global_pool": "token",
        "model_args": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4},
        "pretrained_cfg": {
            "input_size": [3, 32, 32],
            "interpolation": "bicubic",
            "crop_pct": 0.9,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "label_names": [f"timm-class-{i}" for i in range(5)],
    }
    (work / "timm" / "config.json").write_text(json.dumps(timm_config))
    put_in_hub_cache(home / "hub", TIMM_ID, {n: work / "timm" / n for n in ("config.json", "model.safetensors")})
    return home, {"hf": hf_model, "timm": timm_model}


def offline_env(home: Path) -> dict[str, str]:
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(home / "hub")}


def torch_and_ours_agree(store: ModelStore, ref: str, model: Any) -> None:
    from vitserve.model_store.pretrained import from_pretrained

    pretrained = from_pretrained(ref, store=store)
    x = preprocess([photo("astronaut"), photo("coffee")], pretrained.card.data)
    import mindspore as ms

    ours = pretrained.model(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(ours, logits(model, x), atol=1e-4, rtol=1e-4)


def test_hub_ids_parse() -> None:
    assert parse_hub_id("hf:google/vit-base-patch16-224") == HubId("google/vit-base-patch16-224")
    assert parse_hub_id("hf:google/vit-base-patch16-224@refs/pr/1") == HubId("google/vit-base-patch16-224", "refs/pr/1")
    assert parse_hub_id(TIMM_ID) == HubId(TIMM_ID) == parse_hub_id(f"hf-hub:{TIMM_ID}")
    assert parse_hub_id("weights/model.safetensors") is None
    with pytest.raises(ValueError, match="not a Hub id"):
        parse_hub_id("hf:no-slash")


@pytest.mark.slow
def test_import_hf_and_timm_ids_from_the_cache_offline(
    hub_home: tuple[Path, dict[str, Any]], tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    home, models = hub_home
    store = tmp_path / "store"
    hf = run_cli("import", "hf:google/vit-tiny-test", "--store", store, "--json", env=offline_env(home))
    assert hf.returncode == 0, hf.stderr
    assert json.loads(hf.stdout) == {
        "ref": "vit-tiny-test:1", "hub_id": "hf:google/vit-tiny-test", "commit": COMMIT, "layout": "hf", "aliases": []
    }  # fmt: skip
    timm = run_cli("import", TIMM_ID, "--name", "timm-tiny", "--store", store, "--json", env=offline_env(home))
    assert timm.returncode == 0, timm.stderr
    assert json.loads(timm.stdout)["layout"] == "timm"
    opened = ModelStore(store)
    hf_card, timm_card = opened.resolve("vit-tiny-test"), opened.resolve("timm-tiny")
    assert hf_card.labels == [f"hf-class-{i}" for i in range(5)]
    assert hf_card.lineage["hub"] == {"hub_id": "hf:google/vit-tiny-test", "repo_id": "google/vit-tiny-test",
                                      "commit": COMMIT, "layout": "hf"}  # fmt: skip
    assert timm_card.labels == [f"timm-class-{i}" for i in range(5)]
    assert (timm_card.data.crop_pct, timm_card.data.mean) == (0.9, (0.5, 0.5, 0.5))
    torch_and_ours_agree(opened, "vit-tiny-test", models["hf"])
    torch_and_ours_agree(opened, "timm-tiny", models["timm"])


@pytest.mark.slow
def test_an_id_missing_from_the_cache_offline_fails_clearly(
    hub_home: tuple[Path, dict[str, Any]], tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    home, _ = hub_home
    result = run_cli("import", "hf:google/not-cached", "--store", tmp_path / "s", env=offline_env(home))
    assert result.returncode == EXIT_NOT_FOUND, result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and "hf:google/not-cached" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "s" / "not-cached")
