"""The outermost ASGI middleware: the request id, the per-request log line, the request observers, the trace.

For each HTTP request: take the id from ``X-Request-Id`` (or W3C ``traceparent``'s trace id) or make one, open
the request's ``RequestRecord`` in ``request_scope`` (the one the gRPC door uses too: log lines and error bodies
read its id, the request observers get it at the end, one access log line on logger ``vitserve.access``), and
echo the id in the ``X-Request-Id`` response header. An unhandled exception below becomes the 500 JSON error
here, with the request id, so that even a bug's answer can be found in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitserve.service.http.errors import error_response
from vitserve.service.observability import request_context
from vitserve.service.observability.request_context import RequestObserver, RequestRecord
from vitserve.service.observability.request_scope import request_scope
from vitserve.service.observability.tracing import Tracer

log = logging.getLogger(__name__)

# Polled every few seconds by orchestrators and scrapers: logged at DEBUG so they do not drown the requests.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class RequestMiddleware:
    """Request ids, access log, the request ``observers`` and the request span (``tracer`` None: no tracing)."""

    def __init__(self, app: ASGIApp, observers: Sequence[RequestObserver], tracer: Callable[[], Tracer | None]) -> None:
        self.app, self.observers, self.tracer = app, tuple(observers), tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = _record(scope)
        header = (b"x-request-id", record.request_id.encode("latin-1"))
        response_started = False

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                record.bytes_in += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                record.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        with request_scope(record, self.observers, self.tracer(), quiet=record.path in QUIET_PATHS):
            try:
                await self.app(scope, counting_receive, tagging_send)
            except Exception:
                log.exception("unhandled error on %s %s", record.method, record.path)
                if response_started:
                    raise
                message = f"internal error (incident {record.request_id}); see the server log"
                response = error_response("internal_error", message, 500)
                await response(scope, counting_receive, tagging_send)
            finally:
                route = scope.get("route")
                record.route = getattr(route, "path", "unmatched")


def _record(scope: Scope) -> RequestRecord:
    headers = dict(scope["headers"])
    request_id, parent = request_context.request_id_from(headers)
    client = scope.get("client")
    return RequestRecord(
        request_id=request_id,
        parent_span_id=parent,
        method=scope["method"],
        path=scope["path"],
        client=f"{client[0]}:{client[1]}" if client else None,
    )
