"""Every store command once, as a user runs it: the installed `vitserve` console script in a subprocess.

Independent commands run side by side (each subprocess pays the MindSpore import; error paths and output
details are covered in-process by test_cli_commands.py).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.admin.mae_source import MAE_CONFIG, write_mae_checkpoint
from tests.admin.upload_server import RecordingServer
from vitserve.model_store import ModelStore
from vitserve.runtime.pipeline import pipeline


def _ok(result, *fragments):
    assert result.returncode == 0, result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stdout, result.stdout
    return result


@pytest.mark.slow
def test_import_list_show_upload_promote_rollback_delete_gc_predict(run_cli, tiny_ckpt, tmp_path):
    store_dir = tmp_path / "store"
    store = ModelStore(store_dir)
    source = tmp_path / "mae_finetuned_vit_tiny.pth"
    ours = write_mae_checkpoint(source)
    upload = ["ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", tiny_ckpt / "config.json"]
    upload += ["--data", tiny_ckpt / "data.json", "--labels", tiny_ckpt / "labels.json", "--name", "digits"]
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((60, 50, 3)) * 255).astype(np.uint8)).save(image)

    with ThreadPoolExecutor(max_workers=4) as pool, RecordingServer() as server:
        imported = pool.submit(run_cli, "import", source, "--name", "mae-vit", "--alias", "production",
                               "--store", store_dir)  # fmt: skip
        uploaded = pool.submit(run_cli, *upload, "--store", store_dir)
        remote = pool.submit(run_cli, *upload, "--url", server.url, "--token", "s3cret")
        _ok(imported.result(), "published mae-vit:1 (aliases: production)")
        _ok(uploaded.result(), "published digits:1")
        _ok(remote.result(), "uploaded digits:7")
    assert "import mae_finetuned_vit_tiny.pth" in imported.result().stderr  # the progress bar
    state, card = store.load("mae-vit")
    assert card.config == MAE_CONFIG and card.lineage["converted_from"]["format"] == "mae"
    assert card.labels[0] == "tench" and card.labels[517] == "crane"  # ImageNet names for a 1000-class head
    np.testing.assert_array_equal(state["blocks.0.norm1.gamma"], ours["blocks.0.norm1.gamma"])
    assert server.requests[0]["headers"]["Authorization"] == "Bearer s3cret"
    assert server.requests[0]["fields"]["checkpoint"][0]["content"] == (tiny_ckpt / "model.ckpt").read_bytes()

    _prepare_models(store)  # in-process, so that every command below can run side by side
    root = store_dir
    with ThreadPoolExecutor(max_workers=7) as pool:
        listed = pool.submit(run_cli, "models", "list", env={"VITSERVE_STORE_ROOT": str(store_dir)})  # default root
        shown = pool.submit(run_cli, "models", "show", "mae-vit:1", "--store", root)
        predicted = pool.submit(run_cli, "predict", image, "--model", "mae-vit", "--top-k", "2", "--json",
                                "--store", root)  # fmt: skip
        promoted = pool.submit(run_cli, "models", "promote", "digits", "2", "--alias", "production", "--store", root)
        rolled = pool.submit(run_cli, "models", "rollback", "rb", "--store", root)
        deleted = pool.submit(run_cli, "models", "delete", "del:2", "--store", root)
        collected = pool.submit(run_cli, "models", "gc", "gc", "--store", root)
    _ok(promoted.result(), "digits@production → 2")
    _ok(rolled.result(), "rb@production → 1")
    _ok(deleted.result(), "deleted del:2")
    _ok(collected.result(), "removed: gc:2")  # 1 is production, 3 the latest
    assert store.resolve("digits").version == 2 and store.resolve("rb").version == 1
    assert [c.version for c in store.versions("del")] == [1]
    assert [c.version for c in store.versions("gc")] == [1, 3]
    rows = [line.split()[:4] for line in _ok(listed.result()).stdout.splitlines()]
    assert rows[0] == ["NAME", "VERSIONS", "LATEST", "ALIASES"]
    assert ["mae-vit", "1", "1", "production=1"] in rows and ["rb", "1,2", "2"] in [r[:3] for r in rows]
    _ok(shown.result(), "model         mae-vit:1", "tench, goldfish")
    out = json.loads(_ok(predicted.result()).stdout)
    want = pipeline("image_classification", model="mae-vit:1", store=store)(image, top_k=2)[0]
    assert out["model"] == {"name": "mae-vit", "version": 1} and out["results"][0]["image"] == str(image)
    assert [p["index"] for p in out["results"][0]["predictions"]] == [p["index"] for p in want]


def _prepare_models(store: ModelStore) -> None:
    """digits:2 to promote; rb with production moved 1 → 2; del with 2 versions; gc with 3, production=1."""
    store.publish(**_next_version(store, "digits"))
    for name, count in (("rb", 2), ("del", 2), ("gc", 3)):
        for _ in range(count):
            store.publish(**_next_version(store, name))
    store.set_alias("rb", "production", 1)
    store.set_alias("rb", "production", 2)
    store.set_alias("gc", "production", 1)


def _next_version(store: ModelStore, name: str) -> dict:
    state, card = store.load("digits:1")
    return {"name": name, "state": state, "config": card.config, "data": card.data, "labels": card.labels,
            "lineage": {"trained_from": "digits:1"}}  # fmt: skip
