"""ASGI middleware: request metrics, refusal while draining, and the request body cap.

Plain ASGI (not ``BaseHTTPMiddleware``) so that bodies stream through untouched and the cap counts bytes as
they arrive: a client cannot make the server buffer more than the cap, whatever Content-Length claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitserve.service.http.errors import PayloadTooLarge, ShuttingDown, error_response
from vitserve.service.http.metrics import Metrics

# Always answered, even while draining: orchestrators poll them to see the drain.
PROBE_PATHS = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


class BodyLimitMiddleware:
    """413 when a body exceeds ``limit_for(path)`` bytes: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(
                "payload_too_large", f"request body of {int(declared)} bytes; the limit is {limit} bytes", 413
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)


class ServingMiddleware:
    """Counts requests by route template and status; answers 503 to everything but probes while draining."""

    def __init__(self, app: ASGIApp, metrics: Metrics, is_draining: Callable[[], bool]) -> None:
        self.app, self.metrics, self.is_draining = app, metrics, is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.is_draining() and scope["path"] not in PROBE_PATHS:
                err = ShuttingDown("the server is shutting down; retry on another replica", retry_after_s=1)
                await error_response(err.code, str(err), err.status, err.headers())(scope, receive, recording_send)
            else:
                await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.monotonic() - started)
