"""Every gRPC call leaves the records an HTTP request does: its request id (returned in the trailing metadata), one
access line on ``vitserve.access``, the request metrics, a ``/stats`` entry for inference, and a span."""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import pytest

from tests.service.fakes import png
from tests.service.test_observability import Lines
from tests.service.test_v2_grpc import RESPONSES, SERVICE, grpc_app, image_request
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

pytestmark = pytest.mark.anyio

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def access_lines() -> Any:
    handler = Lines()
    logger = logging.getLogger("vitserve.access")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


async def traced_call(channel: grpc.aio.Channel, method: str, request: Any, *metadata: tuple[str, str]) -> Any:
    """The call's outcome (response or error) and its trailing metadata as a dict."""
    call = channel.unary_unary(
        SERVICE + method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=RESPONSES[method].FromString,
    )(request, metadata=metadata, timeout=10)
    try:
        outcome = await call
    except grpc.aio.AioRpcError as err:
        return err, dict(err.trailing_metadata() or ())
    return outcome, dict(await call.trailing_metadata() or ())


async def test_a_grpc_call_has_its_access_line_metrics_and_stats(serve: Any, access_lines: Any) -> None:
    async with grpc_app(serve) as (stub, client, _):
        ok, ok_trailers = await traced_call(
            stub.channel, "ModelInfer", image_request(png(5), png(9)), ("x-request-id", "g-42")
        )
        missing, missing_trailers = await traced_call(stub.channel, "ModelMetadata", pb.ModelMetadataRequest(name="no"))
        await traced_call(stub.channel, "ServerLive", pb.ServerLiveRequest())
        metrics = (await client.get("/metrics")).text
        stats = (await client.get("/stats")).json()
    assert ok.model_name == "tiny" and ok.id == "g-42" and ok_trailers["x-request-id"] == "g-42"
    assert missing.code() == grpc.StatusCode.NOT_FOUND and HEX32.match(missing_trailers["x-request-id"])
    lines = {line["request_id"]: line for line in access_lines}
    line = lines["g-42"]
    assert (line["route"], line["status"], line["model"], line["version"], line["images"]) == (
        "grpc:ModelInfer",
        200,
        "tiny",
        1,
        2,
    )
    assert (line["protocol"], line["grpc_status"], line["error_code"], line["level"]) == ("grpc", "OK", None, "INFO")
    assert line["path"] == "/inference.GRPCInferenceService/ModelInfer" and line["bytes"] > 0
    assert line["duration_ms"] > 0 and set(line["stages_ms"]) == {"decode", "queue", "infer"}
    assert re.match(r"^127\.0\.0\.1:\d+$", line["client"])
    refused = lines[missing_trailers["x-request-id"]]
    assert (refused["route"], refused["status"], refused["error_code"], refused["grpc_status"]) == (
        "grpc:ModelMetadata",
        404,
        "model_not_found",
        "NOT_FOUND",
    )
    probe = [x for x in access_lines if x["route"] == "grpc:ServerLive"]
    assert len(probe) == 1 and probe[0]["level"] == "DEBUG"  # probes do not drown the requests
    assert 'vitserve_requests_total{route="grpc:ModelInfer",status="200"} 1.0' in metrics
    assert 'vitserve_requests_total{route="grpc:ModelMetadata",status="404"} 1.0' in metrics
    assert 'vitserve_request_seconds_count{route="grpc:ModelInfer"} 1.0' in metrics
    assert 'vitserve_model_requests_total{model="tiny",status="200",version="1"} 1.0' in metrics
    assert 'vitserve_model_images_total{model="tiny",version="1"} 2.0' in metrics
    assert stats["summary"]["requests"] == 1  # the ModelInfer call; metadata and probes are not inference


async def test_a_grpc_call_has_a_span_continuing_the_callers_trace(serve: Any) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from tests.service.test_tracing import in_memory
    from vitserve.service.observability.tracing import REQUEST_ID_ATTRIBUTE

    tracer, exporter = in_memory()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with grpc_app(serve) as (stub, _, app):
        app.state.tracer = tracer
        ok, trailers = await traced_call(
            stub.channel, "ModelInfer", image_request(png(5)), ("traceparent", f"00-{trace_id}-{parent}-01")
        )
    assert ok.model_name == "tiny" and trailers["x-request-id"] == trace_id
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == "inference.GRPCInferenceService/ModelInfer"]
    assert f"{request.context.trace_id:032x}" == trace_id and f"{request.parent.span_id:016x}" == parent
    assert (request.attributes["rpc.system"], request.attributes["rpc.method"]) == ("grpc", "ModelInfer")
    assert request.attributes["rpc.grpc.status_code"] == 0 and request.attributes[REQUEST_ID_ATTRIBUTE] == trace_id
    stages = sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id)
    assert stages == ["decode", "infer", "queue"]


async def test_a_message_over_the_cap_is_recorded_as_too_large(serve: Any, access_lines: Any) -> None:
    async with grpc_app(serve, max_body_bytes=4096, max_bodies_bytes=4096) as (stub, _, _):
        big, _ = await traced_call(stub.channel, "ModelInfer", image_request(b"x" * 8192), ("x-request-id", "big-1"))
    assert big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own refusal, from the length prefix
    (line,) = [x for x in access_lines if x["request_id"] == "big-1"]
    assert (line["status"], line["error_code"], line["grpc_status"]) == (413, "payload_too_large", "RESOURCE_EXHAUSTED")
