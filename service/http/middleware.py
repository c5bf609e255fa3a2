"""ASGI middleware: request metrics, refusal while draining, and the request body caps.

Plain ASGI (not ``BaseHTTPMiddleware``) so that bodies stream through untouched and the caps count bytes as
they arrive: a client cannot make the server buffer more than the cap, whatever Content-Length claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitserve.service.core.body_budget import BodyBudget, bodies_busy
from vitserve.service.core.errors import PayloadTooLarge, ShuttingDown
from vitserve.service.core.metrics import Metrics
from vitserve.service.http.errors import error_response

# Always answered, even while draining: orchestrators poll them to see the drain.
PROBE_PATHS = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


class BodyLimitMiddleware:
    """413 when a body exceeds ``limit_for(path)`` bytes: at once from Content-Length, else while streaming.

    With a ``budget``, the bodies of paths ``budgeted(path)`` also share it: a request's bytes count from
    arrival (its Content-Length at once) until its answer is sent, and a body that does not fit is a 503 with
    Retry-After: at once when Content-Length says so, unread; else when the chunk that overflows arrives."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        budget: BodyBudget | None = None,
        budgeted: Callable[[str], bool] = lambda path: True,
    ) -> None:
        self.app, self.limit_for, self.budget, self.budgeted = app, limit_for, budget, budgeted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            message = f"request body of {int(declared)} bytes; the limit is {limit} bytes"
            response = error_response("payload_too_large", message, 413, path=scope["path"])
            await response(scope, receive, send)
            return
        budget = self.budget if self.budget is not None and self.budgeted(scope["path"]) else None
        seen = held = 0
        if budget is not None and declared.isascii() and declared.isdigit():
            if not budget.take(int(declared)):
                busy = bodies_busy()
                await error_response(busy.code, str(busy), busy.status, busy.headers(), path=scope["path"])(
                    scope, receive, send
                )
                return
            held = int(declared)

        async def capped_receive() -> Message:
            nonlocal seen, held
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                if budget is not None and seen > held:
                    if not budget.take(seen - held):
                        raise bodies_busy()
                    held = seen
            return message

        try:
            await self.app(scope, capped_receive, send)
        finally:
            if budget is not None:
                budget.give(held)


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
                await error_response(err.code, str(err), err.status, err.headers(), path=scope["path"])(
                    scope, receive, recording_send
                )
            else:
                await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.monotonic() - started)
