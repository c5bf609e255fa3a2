"""Admin routes, in-process: auth, upload (verified by loading), aliases with hot swap, rollback, load/unload."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import auth, corrupt, png
from tests.tiny import TINY, TINY_DATA, random_state
from vitserve.model_store import ModelStore
from vitserve.vit.checkpoint import save_checkpoint

pytestmark = pytest.mark.anyio


def ckpt_bytes(tmp_path: Path, state: dict[str, Any]) -> bytes:
    path = tmp_path / "up.ckpt"
    save_checkpoint(state, path)
    return path.read_bytes()


def upload_form(checkpoint: bytes, config: str | None = None, **fields: str) -> dict[str, Any]:
    data = {"config": config if config is not None else TINY.to_json(), **fields}
    return {"files": {"checkpoint": ("model.ckpt", io.BytesIO(checkpoint), "application/octet-stream")}, "data": data}


async def test_admin_routes_need_the_token_and_vanish_without_one(serve: Any) -> None:
    async with serve() as (client, _):
        missing = await client.post("/admin/models/tiny:2/load")
        wrong = await client.post("/admin/models/tiny:2/load", headers={"Authorization": "Bearer nope"})
        basic = await client.post("/admin/models/tiny:2/load", headers={"Authorization": "Basic abc"})
    async with serve(admin_token=None) as (client, _):
        off = await client.post("/admin/models/tiny:2/load", headers=auth())
        schema = (await client.get("/openapi.json")).json()
    for r in (missing, wrong, basic):
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert off.status_code == 404 and off.json()["error"]["code"] == "not_found"
    assert not any(path.startswith("/admin") for path in schema["paths"])


async def test_upload_publishes_a_verified_version(serve: Any, store: ModelStore, tmp_path: Path) -> None:
    checkpoint = ckpt_bytes(tmp_path, random_state(5))
    labels = json.dumps([f"c{i}" for i in range(10)])
    async with serve() as (client, _):
        r = await client.post(
            "/admin/models/uploaded/versions",
            headers=auth(),
            **upload_form(checkpoint, data=json.dumps(TINY_DATA.to_dict()), labels=labels, description="up"),
        )
        default_labels = await client.post("/admin/models/uploaded/versions", headers=auth(), **upload_form(checkpoint))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"]) == ("uploaded", 1) and len(body["sha256"]) == 64
    card = store.resolve("uploaded:1")
    assert card.labels[3] == "c3" and card.description == "up" and card.lineage["uploaded"] == "model.ckpt"
    assert default_labels.status_code == 201 and store.resolve("uploaded:2").labels[3] == "3"
    store.load("uploaded:1")  # the published weights verify


async def test_upload_refuses_what_does_not_load(serve: Any, store: ModelStore, tmp_path: Path) -> None:
    good = ckpt_bytes(tmp_path, random_state(5))
    wrong_shape = ckpt_bytes(tmp_path, random_state(5, TINY.replace(embed_dim=64)))
    nan_state = random_state(5)
    nan_state["head.bias"][0] = float("nan")
    with_nan = ckpt_bytes(tmp_path, nan_state)
    async with serve(max_upload_bytes=1_000_000) as (client, _):
        cases = {
            "not a checkpoint": await client.post(
                "/admin/models/x/versions", headers=auth(), **upload_form(b"garbage" * 100)
            ),
            "wrong shapes": await client.post("/admin/models/x/versions", headers=auth(), **upload_form(wrong_shape)),
            "nan weights": await client.post("/admin/models/x/versions", headers=auth(), **upload_form(with_nan)),
            "bad config": await client.post("/admin/models/x/versions", headers=auth(), **upload_form(good, "{")),
            "bad name": await client.post("/admin/models/..evil/versions", headers=auth(), **upload_form(good)),
            "no file": await client.post("/admin/models/x/versions", headers=auth(), data={"config": TINY.to_json()}),
            "too big": await client.post(
                "/admin/models/x/versions", headers=auth(), **upload_form(good + b"\0" * 1_100_000)
            ),
        }
    codes = {k: (r.status_code, r.json()["error"]["code"]) for k, r in cases.items()}
    assert codes == {
        "not a checkpoint": (422, "invalid_request"),
        "wrong shapes": (422, "checkpoint_mismatch"),
        "nan weights": (422, "invalid_request"),
        "bad config": (422, "invalid_request"),
        "bad name": (422, "invalid_model_reference"),
        "no file": (422, "invalid_request"),
        "too big": (413, "payload_too_large"),
    }
    assert "x" not in store.list_models()


async def test_load_serve_and_unload(serve: Any, factory: Any) -> None:
    async with serve() as (client, _):
        loaded = await client.post("/admin/models/tiny:2/load", headers=auth())
        by_version = await client.post("/classify", files={"file": png(1)}, params={"model": "tiny:2"})
        by_name = await client.post("/classify", files={"file": png(1)})
        refuse = await client.post("/admin/models/tiny:1/unload", headers=auth())
        swapped = await client.post("/admin/models/tiny:2/load", headers=auth(), params={"serve": "true"})
        now = await client.post("/classify", files={"file": png(1)})
        old_gone = await client.post("/classify", files={"file": png(1)}, params={"model": "tiny:1"})
        again = await client.post("/admin/models/tiny:1/load", headers=auth())
        unloaded = await client.post("/admin/models/tiny:1/unload", headers=auth())
        not_loaded = await client.post("/admin/models/tiny:1/unload", headers=auth())
    assert loaded.status_code == 200 and loaded.json()["serving"] == "tiny:1"
    assert by_version.json()["model"]["version"] == 2 and by_name.json()["model"]["version"] == 1
    assert refuse.status_code == 409
    assert swapped.json()["serving"] == "tiny:2" and now.json()["model"]["version"] == 2
    assert old_gone.status_code == 404 and old_gone.json()["error"]["code"] == "model_not_loaded"
    assert again.status_code == 200 and unloaded.status_code == 200 and not_loaded.status_code == 404


async def test_in_flight_requests_finish_on_the_version_they_were_queued_for(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.1
    async with serve(max_batch_size=1, max_delay_ms=0) as (client, _):
        await client.post("/admin/models/tiny:2/load", headers=auth())
        in_flight = [asyncio.create_task(client.post("/classify", files={"file": png(i)})) for i in range(5)]
        await asyncio.sleep(0.05)
        swap = await client.post("/admin/models/tiny:2/load", headers=auth(), params={"serve": "true"})
        after = await client.post("/classify", files={"file": png(9)})
        done = await asyncio.gather(*in_flight)
    assert swap.status_code == 200
    assert [r.status_code for r in done] == [200] * 5
    assert {r.json()["model"]["version"] for r in done} == {1}  # all queued on v1, all answered by v1
    assert after.json()["model"]["version"] == 2
    assert sum(factory.engines["tiny:1"].batches[4:]) == 5  # after its 4 warm-up runs, exactly those five


async def test_a_broken_version_leaves_the_serving_one(serve: Any, factory: Any, store: ModelStore) -> None:
    corrupt(store, store.resolve("tiny:2"))
    async with serve() as (client, _):
        broken = await client.post("/admin/models/tiny:2/load", headers=auth(), params={"serve": "true"})
        info = (await client.get("/models/tiny")).json()
        still = await client.post("/classify", files={"file": png(1)})
    assert broken.status_code == 409 and broken.json()["error"]["code"] == "load_failed"
    assert "sha256" in broken.json()["error"]["message"] and "unchanged" in broken.json()["error"]["message"]
    assert info["serving_version"] == 1 and "sha256" in info["versions"][1]["load_error"]
    assert still.json()["model"]["version"] == 1


async def test_a_version_failing_warmup_leaves_the_serving_one(serve: Any, factory: Any) -> None:
    factory.fail_warmup.add("tiny:2")
    async with serve() as (client, _):
        failed = await client.post("/admin/models/tiny:2/load", headers=auth(), params={"serve": "true"})
        still = await client.post("/classify", files={"file": png(1)})
    assert failed.status_code == 409 and "warm-up failed on purpose" in failed.json()["error"]["message"]
    assert still.json()["model"]["version"] == 1


async def test_promote_production_swaps_and_rollback_swaps_back(serve: Any, store: ModelStore) -> None:
    async with serve() as (client, _):
        promoted = await client.post("/admin/models/tiny/aliases/production", headers=auth(), json={"version": 2})
        served = await client.post("/classify", files={"file": png(1)})
        staging = await client.post("/admin/models/tiny/aliases/staging", headers=auth(), json={"version": 1})
        rolled = await client.post("/admin/models/tiny/rollback", headers=auth(), json={"alias": "production"})
        back = await client.post("/classify", files={"file": png(1)})
        bad_body = await client.post("/admin/models/tiny/aliases/production", headers=auth(), json={"version": 0})
        unknown = await client.post("/admin/models/tiny/aliases/production", headers=auth(), json={"version": 9})
    assert promoted.status_code == 200 and promoted.json()["serving"] == "tiny:2"
    assert served.json()["model"]["version"] == 2
    assert staging.status_code == 200 and staging.json()["serving"] == "tiny:2"  # not production: no swap
    assert rolled.json()["version"] == 1 and back.json()["model"]["version"] == 1
    assert store.aliases("tiny") == {"production": 1, "staging": 1}
    assert bad_body.status_code == 422 and unknown.status_code == 404


async def test_eval_gate_refusal_changes_nothing(serve: Any, store: ModelStore) -> None:
    store.record_metrics("tiny:1", "val", {"top1": 0.9})
    store.record_metrics("tiny:2", "val", {"top1": 0.5})
    async with serve() as (client, _):
        refused = await client.post(
            "/admin/models/tiny/aliases/production", headers=auth(), json={"version": 2, "dataset": "val"}
        )
        info = (await client.get("/models/tiny")).json()
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "promotion_refused"
    assert info["serving_version"] == 1 and info["aliases"]["production"] == 1
    assert not info["versions"][1]["loaded"]  # pre-loaded for the swap, unloaded again
