"""The HTTP contract, in-process, on the fake engine: shapes, forms, batching, errors, models, probes, metrics."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.service.fakes import expected_class, png

pytestmark = pytest.mark.anyio


def error_of(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}, body
    return response.status_code, body["error"]["code"]


async def test_classify_multipart_response_shape(serve: Any) -> None:
    image = png(120)
    async with serve() as (client, _):
        r = await client.post("/classify", files={"file": ("a.png", image, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "tiny", "version": 1}  # production alias
    assert len(body["results"]) == 1
    result = body["results"][0]
    assert len(result["predictions"]) == 5  # default top_k
    best = result["predictions"][0]
    assert best["index"] == expected_class(image) and best["label"] == f"class{best['index']}"
    scores = [p["score"] for p in result["predictions"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-9
    assert set(result["timings"]) >= {"decode_ms", "queue_ms", "infer_ms", "batch_size"}
    assert body["total_ms"] > 0


async def test_several_files_keep_input_order(serve: Any) -> None:
    images = [png(level) for level in (10, 60, 130, 200, 250)]
    async with serve() as (client, _):
        files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
        r = await client.post("/classify", files=files, params={"top_k": 1})
    assert r.status_code == 200, r.text
    got = [res["predictions"][0]["index"] for res in r.json()["results"]]
    assert got == [expected_class(data) for data in images]
    assert len({*got}) > 1  # the images really are told apart


async def test_json_base64_url_list_and_raw_body_forms(serve: Any) -> None:
    image = png(90)
    encoded = base64.b64encode(image).decode()
    async with serve() as (client, _):
        single = await client.post("/classify", json={"image_base64": encoded, "top_k": 2})
        as_data_url = {"images": [{"image_base64": "data:image/png;base64," + encoded}]}
        data_url = await client.post("/classify", json=as_data_url)
        raw = await client.post("/classify", content=image, headers={"Content-Type": "image/png"})
    assert single.status_code == 200 and len(single.json()["results"][0]["predictions"]) == 2
    assert data_url.status_code == 200 and raw.status_code == 200
    for r in (single, data_url, raw):
        assert r.json()["results"][0]["predictions"][0]["index"] == expected_class(image)


async def test_top_k_is_bounded(serve: Any) -> None:
    async with serve(max_top_k=20) as (client, _):
        clamped = await client.post("/classify", files={"file": png(1)}, params={"top_k": 15})
        too_big = await client.post("/classify", files={"file": png(1)}, params={"top_k": 21})
        zero = await client.post("/classify", files={"file": png(1)}, params={"top_k": 0})
        body_zero = await client.post("/classify", json={"image_base64": base64.b64encode(png(1)).decode(), "top_k": 0})
        not_int = await client.post("/classify", files={"file": png(1)}, data={"top_k": "many"})
    assert clamped.status_code == 200 and len(clamped.json()["results"][0]["predictions"]) == 10  # num_classes
    for r in (too_big, zero, body_zero, not_int):
        assert error_of(r) == (422, "invalid_request")


async def test_model_selection_by_version_alias_and_errors(serve: Any) -> None:
    async with serve() as (client, _):
        by_alias = await client.post("/classify", files={"file": png(5)}, params={"model": "tiny@production"})
        by_version = await client.post("/classify", files={"file": png(5)}, data={"model": "tiny:1"})
        not_loaded = await client.post("/classify", files={"file": png(5)}, params={"model": "tiny:2"})
        unknown = await client.post("/classify", files={"file": png(5)}, params={"model": "nope"})
        no_version = await client.post("/classify", files={"file": png(5)}, params={"model": "tiny:9"})
        bad_ref = await client.post("/classify", files={"file": png(5)}, params={"model": "../etc"})
    assert by_alias.json()["model"]["version"] == 1 and by_version.json()["model"]["version"] == 1
    assert error_of(not_loaded) == (404, "model_not_loaded")
    assert "/admin/models/tiny:2/load" in not_loaded.json()["error"]["message"]
    assert error_of(unknown) == (404, "model_not_found")
    assert error_of(no_version) == (404, "model_not_found")
    assert error_of(bad_ref) == (422, "invalid_model_reference")


async def test_concurrent_requests_share_a_batch(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.05
    images = [png(level) for level in range(0, 256, 16)]
    async with serve(max_batch_size=8, max_delay_ms=50) as (client, _):
        engine = factory.engines["tiny:1"]
        assert engine.batches == [1, 2, 4, 8]  # warmed: every batch size once
        engine.batches.clear()
        engine.threads.clear()  # warm-up runs on the builder thread when MindSpore does not serve
        responses = await asyncio.gather(
            *(client.post("/classify", files={"file": data}, params={"top_k": 1}) for data in images)
        )
        metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in responses)
    for data, r in zip(images, responses, strict=True):
        assert r.json()["results"][0]["predictions"][0]["index"] == expected_class(data)
    assert max(engine.batches) > 1 and sum(engine.batches) == len(images)
    assert len(engine.threads) == 1  # one device thread for every serving batch
    assert max(r.json()["results"][0]["timings"]["batch_size"] for r in responses) > 1
    assert 'vitserve_batch_size_count{model="tiny:1"}' in metrics
    assert f'vitserve_batch_size_sum{{model="tiny:1"}} {float(len(images))}' in metrics


async def test_queue_overflow_is_503_with_retry_after(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.2
    async with serve(max_batch_size=1, max_delay_ms=0, queue_size=1, max_images=2) as (client, _):
        responses = await asyncio.gather(*(client.post("/classify", files={"file": png(i)}) for i in range(8)))
        metrics = (await client.get("/metrics")).text
        after = await client.post("/classify", files={"file": png(3)})
    statuses = sorted(r.status_code for r in responses)
    assert 503 in statuses and 200 in statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert error_of(rejected) == (503, "overloaded") and int(rejected.headers["retry-after"]) >= 1
    assert 'vitserve_rejections_total{reason="admission"}' in metrics  # 2 images in flight at most
    assert after.status_code == 200


async def test_deadline_exceeded_is_504(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.3
    async with serve(max_batch_size=1, max_delay_ms=0) as (client, _):
        slow = asyncio.create_task(client.post("/classify", files={"file": png(1)}))
        await asyncio.sleep(0.05)
        late = await client.post("/classify", files={"file": png(2)}, params={"timeout_s": 0.05})
        assert (await slow).status_code == 200
    assert error_of(late) == (504, "deadline_exceeded")
    assert factory.engines["tiny:1"].batches == [1, 2, 4, 8, 1]  # warm-up, then only the slow request


async def test_engine_failure_is_500_without_leaking_and_the_server_recovers(serve: Any, factory: Any) -> None:
    async with serve() as (client, _):
        factory.engines["tiny:1"].fail_next = RuntimeError("secret internals /opt/x")
        failed = await client.post("/classify", files={"file": png(1)})
        ok = await client.post("/classify", files={"file": png(1)})
    assert error_of(failed) == (500, "internal_error")
    assert "secret" not in failed.text and "incident" in failed.json()["error"]["message"]
    assert ok.status_code == 200


async def test_models_listing(serve: Any) -> None:
    async with serve() as (client, _):
        listing = await client.get("/models")
        one = await client.get("/models/tiny")
        missing = await client.get("/models/nope")
    assert listing.status_code == 200
    (model,) = listing.json()["models"]
    assert model == one.json()
    assert model["name"] == "tiny" and model["serving_version"] == 1 and model["aliases"] == {"production": 1}
    v1, v2 = model["versions"]
    assert v1["loaded"] and v1["serving"] and v1["ready"] and v1["aliases"] == ["production"]
    assert not v2["loaded"] and not v2["serving"] and v2["num_classes"] == 10
    assert error_of(missing) == (404, "model_not_found")


async def test_probes_metrics_and_docs(serve: Any) -> None:
    async with serve() as (client, app):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["serving"] == {"tiny": "tiny:1"}
        await client.post("/classify", files={"file": png(1)})
        metrics = await client.get("/metrics")
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
        app.state.lifecycle.draining = True
        draining_ready = await client.get("/readyz")
        draining_classify = await client.post("/classify", files={"file": png(1)})
        app.state.lifecycle.draining = False
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("vitserve_requests_total", "vitserve_stage_seconds_bucket", "vitserve_queue_depth", "vitserve_ready"):
        assert name in text
    assert 'vitserve_requests_total{route="/classify",status="200"} 1.0' in text
    assert docs.status_code == 200 and "/classify" in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert draining_ready.status_code == 503 and draining_ready.json()["draining"] is True
    assert error_of(draining_classify) == (503, "shutting_down") and "retry-after" in draining_classify.headers


async def test_framework_errors_use_the_error_shape(serve: Any) -> None:
    async with serve() as (client, _):
        unknown_route = await client.get("/nope")
        wrong_method = await client.get("/classify")
        bad_query = await client.post("/classify", files={"file": png(1)}, params={"timeout_s": "soon"})
    assert error_of(unknown_route) == (404, "not_found")
    assert error_of(wrong_method) == (405, "method_not_allowed")
    assert error_of(bad_query) == (422, "invalid_request") and "timeout_s" in bad_query.json()["error"]["message"]


async def test_each_app_has_its_own_metrics_registry(serve: Any) -> None:
    async with serve() as (a, _), serve() as (b, _):
        await a.post("/classify", files={"file": png(1)})
        text_b = (await b.get("/metrics")).text
    assert 'route="/classify"' not in text_b
