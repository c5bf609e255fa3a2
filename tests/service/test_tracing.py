"""OpenTelemetry spans of a request and its stages, caught by the SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.fakes import png
from vitserve.service.observability.tracing import REQUEST_ID_ATTRIBUTE, Tracer

pytestmark = pytest.mark.anyio

pytest.importorskip("opentelemetry.sdk")


def in_memory() -> tuple[Tracer, Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    return Tracer(exporter, batch=False), exporter


async def test_no_tracer_unless_an_endpoint_is_set(serve: Any) -> None:
    async with serve() as (_, app):
        assert app.state.tracer is None
    # Configured: an OTLP/HTTP exporter (nothing is sent here: no request makes a span).
    async with serve(otlp_endpoint="http://127.0.0.1:9/v1/traces") as (_, app):
        assert isinstance(app.state.tracer, Tracer)


async def test_request_and_stage_spans_carry_the_request_id(serve: Any) -> None:
    tracer, exporter = in_memory()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with serve() as (client, app):
        app.state.tracer = tracer
        response = await client.post(
            "/classify",
            files=[("file", png(5)), ("file", png(9))],
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        )
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == "POST /classify"]
    stages = [s for s in spans if s is not request]
    assert sorted(s.name for s in stages) == ["decode", "decode", "infer", "infer", "queue", "queue"]
    assert f"{request.context.trace_id:032x}" == trace_id and f"{request.parent.span_id:016x}" == parent
    for span in [request, *stages]:
        assert span.attributes[REQUEST_ID_ATTRIBUTE] == response.headers["x-request-id"] == trace_id
        assert span.context.trace_id == request.context.trace_id
    for span in stages:
        assert span.parent.span_id == request.context.span_id
        assert request.start_time <= span.start_time <= span.end_time <= request.end_time
    assert request.attributes["vitserve.model"] == "tiny" and request.attributes["http.response.status_code"] == 200


async def test_an_error_is_on_the_request_span(serve: Any) -> None:
    tracer, exporter = in_memory()
    async with serve() as (client, app):
        app.state.tracer = tracer
        response = await client.post("/classify", params={"model": "absent"}, files={"file": png(1)})
    (span,) = exporter.get_finished_spans()
    assert response.status_code == 404 and span.attributes["error.type"] == "model_not_found"
    assert span.attributes[REQUEST_ID_ATTRIBUTE] == response.headers["x-request-id"]
