"""The Open Inference Protocol over gRPC, in-process on the fake engine: the server the app's lifespan starts
on a free port, called with the protocol's messages over a real channel on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import pytest

from tests.service.fakes import expected_class, png
from tests.tiny import TINY_DATA
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb
from vitserve.vit.decode import decode_image
from vitserve.vit.preprocess import transform

pytestmark = pytest.mark.anyio

SERVICE = "/inference.GRPCInferenceService/"
RESPONSES = {
    "ServerLive": pb.ServerLiveResponse,
    "ServerReady": pb.ServerReadyResponse,
    "ModelReady": pb.ModelReadyResponse,
    "ServerMetadata": pb.ServerMetadataResponse,
    "ModelMetadata": pb.ModelMetadataResponse,
    "ModelInfer": pb.ModelInferResponse,
}


class Stub:
    """The protocol's calls over a channel, from the messages alone (what any gRPC client does)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def __call__(self, method: str, request: Any, timeout: float = 10) -> Any:
        call = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=RESPONSES[method].FromString,
        )
        return await call(request, timeout=timeout)


@asynccontextmanager
async def grpc_app(serve: Any, **settings: Any) -> AsyncIterator[tuple[Stub, Any, Any]]:
    async with (
        serve(grpc_port=0, **settings) as (client, app),
        grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel,
    ):
        yield Stub(channel), client, app


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def packed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def image_request(*images: bytes, raw: bool = True, **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tiny", **fields)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    if raw:
        request.raw_input_contents.append(packed(*images))
    else:
        tensor.contents.bytes_contents.extend(images)
    return request


def classify_output(request: pb.ModelInferRequest, name: str, k: int) -> None:
    request.outputs.add(name=name).parameters["classification"].int64_param = k


def unpacked(raw: bytes) -> list[str]:
    out, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        out.append(raw[at + 4 : at + 4 + size].decode())
        at += 4 + size
    return out


async def test_health_and_metadata(serve: Any) -> None:
    async with grpc_app(serve) as (stub, _, _):
        live = await stub("ServerLive", pb.ServerLiveRequest())
        ready = await stub("ServerReady", pb.ServerReadyRequest())
        server = await stub("ServerMetadata", pb.ServerMetadataRequest())
        meta = await stub("ModelMetadata", pb.ModelMetadataRequest(name="tiny"))
        ready_v1 = await stub("ModelReady", pb.ModelReadyRequest(name="tiny", version="1"))
        ready_v2 = await stub("ModelReady", pb.ModelReadyRequest(name="tiny", version="2"))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub("ModelMetadata", pb.ModelMetadataRequest(name="nosuch"))
    assert live.live and ready.ready and server.name == "vitserve" and "classification" in server.extensions
    assert (meta.name, list(meta.versions), meta.platform) == ("tiny", ["1"], "fakeengine")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("image", "BYTES", [-1]),
        ("pixels", "FP32", [-1, 3, 32, 32]),
    ]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [("probabilities", [-1, 10]), ("logits", [-1, 10])]
    assert ready_v1.ready and not ready_v2.ready
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "nosuch" in (missing.value.details() or "")


async def test_infer_matches_rest_and_classify(serve: Any) -> None:
    images = [png(30), png(110), png(240)]
    request = image_request(*images, id="g-1")
    classify_output(request, "probabilities", 3)
    request.outputs.add(name="logits")
    async with grpc_app(serve) as (stub, client, _):
        response = await stub("ModelInfer", request)
        typed = await stub("ModelInfer", image_request(*images, raw=False))
        classic = await client.post("/classify", files=[("file", ("x.png", i, "image/png")) for i in images])
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "g-1")
    classes, logits = response.outputs
    assert (classes.datatype, list(classes.shape)) == ("BYTES", [3, 3])
    assert (logits.datatype, list(logits.shape)) == ("FP32", [3, 10])
    elements = unpacked(response.raw_output_contents[0])
    for i, result in enumerate(classic.json()["results"]):
        assert elements[3 * i : 3 * i + 3] == [
            f"{p['score']:f}:{p['index']}:{p['label']}" for p in result["predictions"][:3]
        ]
    values = np.frombuffer(response.raw_output_contents[1], dtype="<f4").reshape(3, 10)
    assert [int(np.argmax(v)) for v in values] == [expected_class(i) for i in images]
    probabilities = np.frombuffer(typed.raw_output_contents[0], dtype="<f4").reshape(3, 10)
    assert [int(np.argmax(v)) for v in probabilities] == [expected_class(i) for i in images]


async def test_infer_pixels_as_typed_contents(serve: Any) -> None:
    image = png(180)
    pixels = transform(decode_image(image), TINY_DATA)[None].astype(np.float32)
    request = pb.ModelInferRequest(model_name="tiny", model_version="1")
    request.inputs.add(name="pixels", datatype="FP32", shape=list(pixels.shape)).contents.fp32_contents.extend(
        pixels.reshape(-1).tolist()
    )
    classify_output(request, "logits", 1)
    async with grpc_app(serve) as (stub, _, _):
        response = await stub("ModelInfer", request)
    assert int(unpacked(response.raw_output_contents[0])[0].split(":")[1]) == expected_class(image)


async def test_errors_are_grpc_statuses(serve: Any, factory: Any) -> None:
    bad_input = pb.ModelInferRequest(model_name="tiny")
    bad_input.inputs.add(name="photo", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    not_loaded = image_request(png(1), model_version="2")
    bad_k = image_request(png(1))
    classify_output(bad_k, "logits", 0)
    late = image_request(png(1))
    late.parameters["timeout"].int64_param = 1  # microseconds
    codes = {}
    factory.delay_s = 0.3
    async with grpc_app(serve, max_batch_size=2, queue_size=2, max_images=2, max_delay_ms=1, client_share=1.0) as (
        stub,
        _,
        app,
    ):
        for name, request in {"input": bad_input, "version": not_loaded, "k": bad_k, "late": late}.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub("ModelInfer", request)
            codes[name] = err.value.code()
        # Admission: 4 images at once (queue 2 + batch 2); one batch running and one request queued fill it.
        engine = factory.engines["tiny:1"]
        calls = len(engine.batches)
        running = asyncio.create_task(stub("ModelInfer", image_request(png(2), png(3))))
        await until(lambda: len(engine.batches) > calls)
        held = asyncio.create_task(stub("ModelInfer", image_request(png(4), png(5))))
        await until(lambda: app.state.classifier.in_flight == 4)
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await stub("ModelInfer", image_request(png(4)))
        await asyncio.gather(running, held)
    assert codes == {
        "input": grpc.StatusCode.INVALID_ARGUMENT,
        "version": grpc.StatusCode.NOT_FOUND,
        "k": grpc.StatusCode.INVALID_ARGUMENT,
        "late": grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    assert busy.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", "1") in tuple(busy.value.trailing_metadata() or ())


async def test_a_caller_over_its_request_rate_is_resource_exhausted(serve: Any) -> None:
    # The rate is per address, not per connection: a new channel is the same caller.
    async with grpc_app(serve, client_rate=0.2, client_burst=2, client_rates_fixed=True) as (stub, _, app):
        for i in range(2):
            await stub("ModelInfer", image_request(png(i)))
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await stub("ModelInfer", image_request(png(2)))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await Stub(channel)("ModelInfer", image_request(png(3)))
    assert limited.value.code() == again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = dict(limited.value.trailing_metadata() or ())["retry-after"]
    assert 1 <= int(retry_after) <= 5


async def test_off_by_default_and_stopped_with_the_app(serve: Any) -> None:
    async with serve() as (_, app):
        assert getattr(app.state, "grpc_port", None) is None
    async with grpc_app(serve) as (stub, _, app):
        port = app.state.grpc_port
        assert (await stub("ServerLive", pb.ServerLiveRequest())).live
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await Stub(channel)("ServerLive", pb.ServerLiveRequest(), timeout=1)
    assert gone.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_draining_refuses_inference_and_readiness(serve: Any) -> None:
    async with grpc_app(serve) as (stub, client, app):
        app.state.lifecycle.draining = True
        ready = await stub("ServerReady", pb.ServerReadyRequest())
        live = await stub("ServerLive", pb.ServerLiveRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub("ModelInfer", image_request(png(1)))
        rest_live, rest_ready = await client.get("/v2/health/live"), await client.get("/v2/health/ready")
        app.state.lifecycle.draining = False
    assert live.live and not ready.ready
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (rest_live.status_code, rest_ready.status_code) == (200, 503)  # probes answer while draining
