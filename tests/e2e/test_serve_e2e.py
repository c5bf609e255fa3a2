"""A real ``vitserve serve`` (uvicorn, MindSpore GRAPH_MODE, a tiny ViT from a real store) over real HTTP.

What only a real process shows: real logits, batches on the compiled graph, hot swaps, draining. Queue overflow
and deadlines are proven once per layer elsewhere: their semantics in tests/service/test_batcher.py, their HTTP
answers in tests/service/test_http_api.py.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from tests.e2e.e2e_server import SERVER_SETTINGS, ServerProcess, auth, jpeg, metric
from tests.tiny import publish_tiny
from vitserve.model_store import ModelStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

IMAGES = [jpeg(seed) for seed in range(16)]


def files(count: int, offset: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.jpg", IMAGES[(offset + i) % len(IMAGES)], "image/jpeg")) for i in range(count)]


async def test_service_agrees_with_the_evaluator(
    server: ServerProcess, e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The service and the offline evaluator share one preprocessing path: same validation images, same
    top-1 and the same scores (to float tolerance: the service batches differently)."""
    from vitserve.training.data import scan_image_folder
    from vitserve.training.digits import export_digits
    from vitserve.training.evaluate import evaluate_folder
    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    val = export_digits(tmp_path_factory.mktemp("digits"), size=40).val_dir
    folder = scan_image_folder(val)
    folder.samples[:] = folder.samples[::12]  # every 12th image: all classes, ~30 requests
    state, card = e2e_store.load("tiny")
    model = create_model(card.config)
    load_state_dict(model, state)
    offline = evaluate_folder(model, folder, card.data, batch_size=8, workers=1)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        for (path, _), logits in zip(folder.samples, offline.logits, strict=True):
            with open(path, "rb") as f:
                response = await client.post("/classify", files={"file": ("x.png", f.read(), "image/png")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == {"name": "tiny", "version": card.version}
            best = body["results"][0]["predictions"][0]
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert best["index"] == int(np.argmax(logits))
            assert best["score"] == pytest.approx(float(probs.max()), abs=1e-5)


async def test_concurrent_requests_share_batches(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        before = (await client.get("/metrics")).text
        responses = await asyncio.gather(
            *(client.post("/classify", files=files(1, i), params={"top_k": 3}) for i in range(12))
        )
        after = (await client.get("/metrics")).text
        single = [(await client.post("/classify", files=files(1, i))).json() for i in range(3)]
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses if r.status_code != 200]
    batches = metric(after, "vitserve_batch_size_count", model="tiny:1") - metric(
        before, "vitserve_batch_size_count", model="tiny:1"
    )
    rows = metric(after, "vitserve_batch_size_sum", model="tiny:1") - metric(
        before, "vitserve_batch_size_sum", model="tiny:1"
    )
    assert rows == 12 and batches < 12  # at least one model call carried several requests
    assert max(r.json()["results"][0]["timings"]["batch_size"] for r in responses) > 1
    # The same image gives the same answer whatever batch it rode in (padding rows never leak into results).
    for i, alone in enumerate(single):
        best, batched = alone["results"][0]["predictions"][0], responses[i].json()["results"][0]["predictions"][0]
        assert (best["index"], best["label"]) == (batched["index"], batched["label"])
        assert best["score"] == pytest.approx(batched["score"], abs=1e-5)  # batch size changes float sums only


async def test_hot_swap_under_load_loses_no_request(server: ServerProcess) -> None:
    seen: list[tuple[float, int, int]] = []  # (start time, status, version)
    stop = asyncio.Event()

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        for i in range(400):  # bounded; normally stopped by the event much earlier
            if stop.is_set():
                return
            started = time.monotonic()
            r = await client.post("/classify", files=files(1, n + i))
            seen.append((started, r.status_code, r.json().get("model", {}).get("version", -1)))

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        workers = [asyncio.create_task(worker(client, n)) for n in range(4)]
        await asyncio.sleep(0.5)
        swap = await client.post("/admin/models/tiny:2/load", params={"serve": "true"}, headers=auth())
        swapped_at = time.monotonic()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        info = (await client.get("/models/tiny")).json()
    assert swap.status_code == 200, swap.text
    assert swap.json()["serving"] == "tiny:2"
    assert [s for _, s, _ in seen if s != 200] == []
    assert {v for _, _, v in seen} == {1, 2}
    assert all(v == 2 for t, _, v in seen if t > swapped_at)
    assert info["serving_version"] == 2
    assert [v["loaded"] for v in info["versions"]] == [False, True]  # the old version was retired after draining


async def test_broken_version_does_not_displace_the_good_one(server: ServerProcess, e2e_store: ModelStore) -> None:
    card = publish_tiny(e2e_store, seed=7)
    weights = e2e_store.version_dir(card) / card.weights
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        serving_before = (await client.get("/models/tiny")).json()["serving_version"]
        failed = await client.post(f"/admin/models/{card.ref}/load", params={"serve": "true"}, headers=auth())
        info = (await client.get("/models/tiny")).json()
        still = await client.post("/classify", files=files(1))
        ready = await client.get("/readyz")
    assert failed.status_code == 409 and failed.json()["error"]["code"] == "load_failed"
    assert "sha256" in failed.json()["error"]["message"]
    assert info["serving_version"] == serving_before
    broken = next(v for v in info["versions"] if v["version"] == card.version)
    assert not broken["loaded"] and "sha256" in broken["load_error"]
    assert still.status_code == 200 and still.json()["model"]["version"] == serving_before
    assert ready.status_code == 200


async def test_sigterm_drains_in_flight_work_and_exits_0(
    e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # One test client sends all 96 images: the per-client share would (rightly) refuse a third of them.
    settings = {**SERVER_SETTINGS, "queue_size": 128, "max_delay_ms": 5, "client_share": 1.0}
    proc = ServerProcess(e2e_store.root, tmp_path_factory.mktemp("logs") / "drain.log", **settings)
    try:
        proc.start()
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
            in_flight = [asyncio.create_task(client.post("/classify", files=files(16, i))) for i in range(6)]
            await asyncio.sleep(0.3)  # the requests are in the server: decoding, queued or running
            proc.terminate()
            responses = await asyncio.gather(*in_flight)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        proc.stop()
    assert [r.status_code for r in responses] == [200] * 6, [r.text[:200] for r in responses]
    assert all(len(r.json()["results"]) == 16 for r in responses)
    assert code == 0
    log = proc.log_path.read_text(errors="replace")
    assert "readiness off" in log and "drained" in log
