"""The Open Inference Protocol's REST routes, in-process on the fake engine: health, metadata, readiness,
inference (JSON, binary tensor data, preprocessed pixels), errors in the protocol's shape, and the same
batcher, admission and deadlines as ``/classify``."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.service.fakes import expected_class, png
from tests.tiny import TINY_DATA
from vitserve.vit.decode import decode_image
from vitserve.vit.preprocess import transform

pytestmark = pytest.mark.anyio

INFER = "/v2/models/tiny/infer"


def image_input(*images: bytes) -> dict[str, Any]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": data}


def protocol_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def packed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


async def test_health_server_and_model_metadata(serve: Any) -> None:
    async with serve() as (client, _):
        server = (await client.get("/v2")).json()
        live, ready = await client.get("/v2/health/live"), await client.get("/v2/health/ready")
        meta = (await client.get("/v2/models/tiny")).json()
        meta_v2 = (await client.get("/v2/models/tiny/versions/2")).json()
        unknown = await client.get("/v2/models/nosuch")
    assert server["name"] == "vitserve" and {"classification", "binary_tensor_data"} <= set(server["extensions"])
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert meta["name"] == "tiny" and meta["versions"] == ["1"] and meta["platform"] == "fakeengine"
    assert meta["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
    ]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
    ]
    assert meta_v2["name"] == "tiny" and meta_v2["versions"] == ["1"]  # in the store, not loaded here
    assert "nosuch" in protocol_error(unknown, 404)


async def test_model_readiness_per_version(serve: Any) -> None:
    async with serve() as (client, _):
        codes = {
            path: (await client.get(f"/v2/models/{path}/ready")).status_code
            for path in ("tiny", "tiny/versions/1", "tiny/versions/production", "tiny/versions/2")
        }
        missing = await client.get("/v2/models/tiny/versions/9/ready")
        loaded = await client.post("/admin/models/tiny:2/load", headers=_auth())
        now_loaded = await client.get("/v2/models/tiny/versions/2/ready")
        v2_body = (await client.get("/v2/models/tiny/versions/2")).json()
    assert codes == {"tiny": 200, "tiny/versions/1": 200, "tiny/versions/production": 200, "tiny/versions/2": 400}
    protocol_error(missing, 404)
    assert loaded.status_code == 200, loaded.text
    assert now_loaded.status_code == 200 and now_loaded.json() == {"name": "tiny", "ready": True}
    assert v2_body["versions"] == ["1", "2"]


def _auth() -> dict[str, str]:
    from tests.service.fakes import auth

    return auth()


async def test_infer_json_matches_classify(serve: Any) -> None:
    images = [png(level) for level in (20, 90, 200)]
    request = {
        "id": "req-1",
        "inputs": [image_input(*images)],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}, {"name": "logits"}],
    }
    async with serve() as (client, _):
        r = await client.post(INFER, json=request)
        classic = await client.post("/classify", files=[("file", ("x.png", i, "image/png")) for i in images])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "req-1")
    classes, logits = body["outputs"]
    assert (classes["name"], classes["datatype"], classes["shape"]) == ("probabilities", "BYTES", [3, 3])
    assert (logits["datatype"], logits["shape"], len(logits["data"])) == ("FP32", [3, 10], 30)
    for i, result in enumerate(classic.json()["results"]):
        expected = [f"{p['score']:f}:{p['index']}:{p['label']}" for p in result["predictions"][:3]]
        assert classes["data"][3 * i : 3 * i + 3] == expected
        assert int(np.argmax(logits["data"][10 * i : 10 * i + 10])) == expected_class(images[i])


async def test_infer_binary_tensor_data_both_ways(serve: Any) -> None:
    images = [png(40), png(160)]
    raw = packed(*images)
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    async with serve() as (client, _):
        r = await client.post(
            INFER,
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        )
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    body = json.loads(r.content[:size])
    (output,) = body["outputs"]
    assert output["shape"] == [2, 10] and "data" not in output
    probabilities = np.frombuffer(r.content[size:], dtype="<f4").reshape(2, 10)
    assert output["parameters"]["binary_data_size"] == probabilities.nbytes == len(r.content) - size
    assert [int(np.argmax(p)) for p in probabilities] == [expected_class(i) for i in images]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


async def test_infer_preprocessed_pixels(serve: Any) -> None:
    images = [png(70), png(230)]
    pixels = np.stack([transform(decode_image(i), TINY_DATA) for i in images]).astype(np.float32)
    as_json = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": list(pixels.shape), "data": pixels.tolist()}]}
    raw = pixels.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "FP32",
                    "shape": [2, 3, 32, 32],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"classification": 1}}],
        }
    ).encode()
    async with serve() as (client, _):
        by_json = await client.post(INFER, json=as_json)
        by_binary = await client.post(
            INFER, content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
        )
    assert by_json.status_code == 200, by_json.text
    probabilities = np.asarray(by_json.json()["outputs"][0]["data"]).reshape(2, 10)
    assert [int(np.argmax(p)) for p in probabilities] == [expected_class(i) for i in images]
    top1 = by_binary.json()["outputs"][0]["data"]
    assert [int(e.split(":")[1]) for e in top1] == [expected_class(i) for i in images]


@pytest.mark.parametrize(
    ("request_body", "status", "fragment"),
    [
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, 400, "base64"),
        ({"inputs": [{"name": "photo", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}, 400, "unknown input"),
        ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, 400, "must be BYTES"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]}, 400, "holds 2"),
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0]}]}, 400, "shape"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}, 400, "image"),
        ({"inputs": []}, 400, "exactly one input"),
        ({"outputs": []}, 400, "inputs"),
        ({"inputs": [image_input(png(1))["data"]]}, 400, "invalid inference request"),
    ],
)
async def test_infer_refusals_are_protocol_errors(serve: Any, request_body: Any, status: int, fragment: str) -> None:
    async with serve() as (client, _):
        r = await client.post(INFER, json=request_body)
    assert fragment in protocol_error(r, status)


async def test_output_and_parameter_refusals(serve: Any) -> None:
    one = image_input(png(3))
    async with serve(max_images=4) as (client, _):
        too_many_k = await client.post(
            INFER, json={"inputs": [one], "outputs": [{"name": "logits", "parameters": {"classification": 11}}]}
        )
        unknown_output = await client.post(INFER, json={"inputs": [one], "outputs": [{"name": "scores"}]})
        bad_param = await client.post(
            INFER, json={"inputs": [one], "outputs": [{"name": "logits", "parameters": {"classification": "3"}}]}
        )
        too_many_images = await client.post(INFER, json={"inputs": [image_input(*[png(1)] * 5)]})
        bad_header = await client.post(INFER, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
        gzip = await client.post(INFER, json={"inputs": [one]}, headers={"Content-Encoding": "gzip"})
        not_json = await client.post(INFER, content=b"\x00\x01")
        unknown_model = await client.post("/v2/models/nosuch/infer", json={"inputs": [one]})
        not_loaded = await client.post("/v2/models/tiny/versions/2/infer", json={"inputs": [one]})
    assert "between 1 and 10" in protocol_error(too_many_k, 400)
    assert "unknown output" in protocol_error(unknown_output, 400)
    assert "must be int" in protocol_error(bad_param, 400)
    assert "limit is 4" in protocol_error(too_many_images, 413)
    protocol_error(bad_header, 400)
    protocol_error(gzip, 415)
    protocol_error(not_json, 400)
    protocol_error(unknown_model, 404)
    assert "not loaded" in protocol_error(not_loaded, 404)


async def test_shares_the_batcher_admission_and_deadline_with_classify(serve: Any, factory: Any) -> None:
    factory.delay_s = 0.2
    image = png(50)
    # One test client fills the whole budget here: the per-client share is tested in test_hardening.py.
    async with serve(max_delay_ms=100, max_batch_size=2, queue_size=2, max_images=2, client_share=1.0) as (client, app):
        v2, classic = await asyncio.gather(
            client.post(INFER, json={"inputs": [image_input(image)]}),
            client.post("/classify", files={"file": ("a.png", image, "image/png")}),
        )
        # Admission counts images across protocols: 4 in flight is the limit (queue 2 + batch 2).
        # One /classify batch running and one v2 request queued fill it; a third request is refused.
        engine = factory.engines["tiny:1"]
        calls = len(engine.batches)
        held = asyncio.create_task(client.post("/classify", files=[("file", ("a.png", image, "image/png"))] * 2))
        await until(lambda: len(engine.batches) > calls)
        held_v2 = asyncio.create_task(client.post(INFER, json={"inputs": [image_input(image, image)]}))
        await until(lambda: app.state.classifier.in_flight == 4)
        refused = await client.post(INFER, json={"inputs": [image_input(image)]})
        await asyncio.gather(held, held_v2)
        late = await client.post(INFER, json={"inputs": [image_input(image)], "parameters": {"timeout": 1}})
    assert v2.status_code == 200 and classic.status_code == 200
    assert 2 in factory.engines["tiny:1"].batches  # the two protocols' images rode in one model call
    assert "images in progress" in protocol_error(refused, 503) and refused.headers["retry-after"] == "1"
    assert "deadline" in protocol_error(late, 504)


async def test_request_id_falls_back_to_the_header(serve: Any) -> None:
    async with serve() as (client, _):
        r = await client.post(INFER, json={"inputs": [image_input(png(9))]}, headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 200 and r.json()["id"] == "abc-123"
    assert [o["name"] for o in r.json()["outputs"]] == ["probabilities", "logits"]  # every output by default
