"""Admin work beside serving: builds off the device thread, a hot swap under load costs no request, readiness
follows a hung engine, and bad admin input is a 4xx with a clear message."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import running
from tests.service.fakes import FakeEngine, FakeFactory, auth, png
from tests.tiny import TINY, random_state
from vitserve.model_store import Card, ModelStore
from vitserve.runtime.engine import resolve_kind
from vitserve.service.app import create_app

pytestmark = pytest.mark.anyio

BUILD_S = 1.0  # a slow build: what an ONNX export plus an OpenVINO compile costs a real version


class SlowBuildFactory(FakeFactory):
    """Builds take ``BUILD_S`` of blocking work, like an export and a compile; records the building thread."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.01)
        self.build_threads: list[str] = []

    def __call__(self, card: Card, store: ModelStore, settings: object) -> FakeEngine:
        self.build_threads.append(threading.current_thread().name)
        if self.engines:  # the start-up build is not under load
            time.sleep(BUILD_S)
        return super().__call__(card, store, settings)


async def test_a_hot_swap_under_load_costs_no_request(make_settings: Any) -> None:
    if resolve_kind("auto", "CPU") == "mindspore":
        pytest.skip("MindSpore serves here: its builds must share the device thread")
    factory = SlowBuildFactory()
    app = create_app(make_settings(request_timeout_s=0.6, max_delay_ms=2), engine_factory=factory)
    statuses: list[int] = []
    async with running(app) as client:

        async def load() -> None:
            while True:
                r = await client.post("/classify", files={"file": png(len(statuses) % 200)})
                statuses.append(r.status_code)

        traffic = asyncio.create_task(load())
        await asyncio.sleep(0.1)
        swap = await client.post(
            "/admin/models/tiny/aliases/production", json={"version": 2, "force": True}, headers=auth()
        )
        await asyncio.sleep(0.1)
        traffic.cancel()
    assert swap.status_code == 200 and swap.json()["serving"] == "tiny:2"
    assert len(statuses) > 10 and set(statuses) == {200}, statuses
    assert not any(name.startswith("device") for name in factory.build_threads)
    engine_threads = set().union(*(e.threads for e in factory.engines.values()))
    assert any(t.startswith("device") for t in engine_threads)


async def test_readiness_turns_false_while_a_batch_hangs(make_settings: Any) -> None:
    factory = FakeFactory()
    app = create_app(make_settings(batch_stall_s=0.2, request_timeout_s=5), engine_factory=factory)
    async with running(app) as client:
        engine = factory.engines["tiny:1"]
        engine.delay_s = 1.0  # the engine hangs for a second
        stuck = asyncio.create_task(client.post("/classify", files={"file": png(1)}))
        await asyncio.sleep(0.5)
        during = await client.get("/readyz")
        answered = await stuck
        after = await client.get("/readyz")
    assert during.status_code == 503 and during.json()["ready"] is False
    assert answered.status_code == 200 and after.status_code == 200


def _upload(checkpoint: bytes, **fields: str) -> dict[str, Any]:
    data = {"config": TINY.to_json(), **fields}
    return {"files": {"checkpoint": ("model.ckpt", io.BytesIO(checkpoint), "application/octet-stream")}, "data": data}


async def test_bad_admin_input_is_a_4xx_with_a_clear_message(serve: Any, tmp_path: Path) -> None:
    import mindspore as ms

    state = random_state(5)
    good = tmp_path / "good.ckpt"
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(good))
    odd = tmp_path / "odd.ckpt"
    params = [{"name": k, "data": ms.Tensor(v)} for k, v in state.items()]
    ms.save_checkpoint(params, str(odd), append_dict={"note": "not a tensor", "epoch": 3})
    async with serve(max_upload_bytes=2_000_000) as (client, _):
        labels = await client.post(
            "/admin/models/x/versions", headers=auth(), **_upload(good.read_bytes(), labels='["a", "b"]')
        )
        non_tensor = await client.post("/admin/models/x/versions", headers=auth(), **_upload(odd.read_bytes()))
    assert labels.status_code == 422 and "num_classes" in labels.json()["error"]["message"]
    assert non_tensor.status_code == 422, non_tensor.text
    message = non_tensor.json()["error"]["message"]
    assert "not tensors" in message and "note" in message and str(tmp_path) not in message
