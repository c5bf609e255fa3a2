"""One request from arrival to answer, whatever its door: the record bound, the span, the observers, the log line.

``request_scope`` is what the HTTP request middleware (``service.http.request_middleware``) and the gRPC call
frame (``service.v2.grpc_calls``) both wrap a request in: the door makes the ``RequestRecord`` (its id from the
caller's ``x-request-id`` or ``traceparent``, ``request_context.request_id_from``) and fills in what only it
knows (route, status) before the block ends; the scope does the rest, the same way for both.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

from vitserve.service.observability import request_context
from vitserve.service.observability.request_context import RequestObserver, RequestRecord
from vitserve.service.observability.tracing import Tracer

access_log = logging.getLogger("vitserve.access")


@contextlib.contextmanager
def request_scope(
    record: RequestRecord, observers: Sequence[RequestObserver], tracer: Tracer | None, *, quiet: bool = False
) -> Iterator[RequestRecord]:
    """``record`` current (``request_context.current()``) and, with a ``tracer``, the request's span open for the
    block; when it ends, however it ends: the ``observers`` told, one access line written (at DEBUG when
    ``quiet``: probes), the span ended."""
    started = time.monotonic()
    if tracer is not None:
        record.tracer, record.span = tracer, tracer.start_request(record)
    token = request_context.bind(record)
    try:
        yield record
    finally:
        elapsed = time.monotonic() - started
        for observer in observers:
            observer.observe_request(record, elapsed)
        log_access(record, elapsed, quiet=quiet)
        if tracer is not None:
            tracer.end_request(record.span, record)
        request_context.unbind(token)


def log_access(record: RequestRecord, elapsed_s: float, *, quiet: bool = False) -> None:
    """The request's line on logger ``vitserve.access``: a message for people, the record's fields for machines."""
    fields: dict[str, object] = {
        "request_id": record.request_id,
        "method": record.method,
        "route": record.route,
        "path": record.path,
        "status": record.status,
        "model": record.model,
        "version": record.version,
        "images": record.images,
        "bytes": record.bytes_in,
        "duration_ms": round(elapsed_s * 1e3, 3),
        "stages_ms": record.stage_ms,
        "client": record.client,
        "error_code": record.error_code,
        "protocol": record.protocol,
    }
    if record.grpc_status is not None:
        fields["grpc_status"] = record.grpc_status
    model = f" {record.model}:{record.version}" if record.model is not None else ""
    access_log.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s %s %d %.1f ms%s images=%d",
        record.method,
        record.path,
        record.status,
        elapsed_s * 1e3,
        model,
        record.images,
        extra=fields,
    )
