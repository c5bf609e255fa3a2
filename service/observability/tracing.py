"""OpenTelemetry spans for a request and its stages (fetch, decode, queue, infer); off unless configured.

The SDK is imported only when a ``Tracer`` is built (an OTLP endpoint is set, or a test passes its own exporter),
and each app owns its provider: nothing global is set, so two apps in one process never share spans. A request
span continues the caller's trace when it sent a W3C ``traceparent``; every span carries the request id.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitserve.service.observability.request_context import RequestRecord

REQUEST_ID_ATTRIBUTE = "vitserve.request_id"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class Tracer:
    """Starts the spans of requests; ``exporter`` is an OpenTelemetry ``SpanExporter``."""

    def __init__(self, exporter: Any, *, batch: bool = True, service_name: str = "vitserve") -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        # Batching exports off the request path; tests want each span exported as it ends.
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("vitserve.service")

    @classmethod
    def otlp(cls, endpoint: str) -> Tracer:
        """Spans sent by OTLP over HTTP to ``endpoint`` (a collector's ``http://host:4318/v1/traces``)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(OTLPSpanExporter(endpoint=endpoint))

    def start_request(self, record: RequestRecord) -> Any:
        """The request's span (ended by ``end_request``), child of the caller's span when it sent one."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        context = None
        # The caller's trace is continued when the request id is its trace id (an ``x-request-id`` sent beside a
        # ``traceparent`` wins as the id, and is no trace id: the span then starts a trace of its own).
        if record.parent_span_id is not None and _TRACE_ID.match(record.request_id):
            parent = SpanContext(
                trace_id=int(record.request_id, 16),
                span_id=int(record.parent_span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        if record.protocol == "grpc":  # OpenTelemetry's RPC conventions: named ``package.Service/Method``
            name = record.path.lstrip("/")
            service, _, method = name.partition("/")
            span = self._tracer.start_span(name, context=context, kind=SpanKind.SERVER)
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", service)
            span.set_attribute("rpc.method", method)
        else:
            span = self._tracer.start_span(f"{record.method} {record.path}", context=context, kind=SpanKind.SERVER)
            span.set_attribute("http.request.method", record.method)
        span.set_attribute(REQUEST_ID_ATTRIBUTE, record.request_id)
        return span

    def end_request(self, span: Any, record: RequestRecord) -> None:
        if record.protocol == "grpc":
            import grpc

            code = grpc.StatusCode[record.grpc_status] if record.grpc_status else grpc.StatusCode.UNKNOWN
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.set_attribute("vitserve.status", record.status)  # the HTTP status of the same outcome
        else:
            span.update_name(f"{record.method} {record.route}")
            span.set_attribute("http.route", record.route)
            span.set_attribute("http.response.status_code", record.status)
        if record.model is not None:
            span.set_attribute("vitserve.model", record.model)
            span.set_attribute("vitserve.version", record.version or 0)
        if record.images:
            span.set_attribute("vitserve.images", record.images)
        if record.error_code is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", record.error_code)
            if record.status >= 500:
                span.set_status(Status(StatusCode.ERROR, record.error_code))
        span.end()

    def stage(self, parent: Any, name: str, start_ns: int, end_ns: int, record: RequestRecord) -> None:
        """A finished stage (``fetch``, ``decode``, ``queue``, ``infer``) of one image, as a child span."""
        from opentelemetry import trace

        span = self._tracer.start_span(name, context=trace.set_span_in_context(parent), start_time=start_ns)
        span.set_attribute(REQUEST_ID_ATTRIBUTE, record.request_id)
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        self.provider.shutdown()


def note_stage(record: RequestRecord | None, stage: str, ms: float, *, end_ns: int | None = None) -> None:
    """Record a finished stage of one image of the request: its time on the record, and a span when tracing."""
    if record is None:
        return
    record.add_stage(stage, ms)
    if record.tracer is not None and record.span is not None:
        end = end_ns if end_ns is not None else time.time_ns()
        record.tracer.stage(record.span, stage, end - int(ms * 1e6), end, record)
