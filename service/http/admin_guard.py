"""The gate in front of ``/admin``: pure ASGI, so it answers before a single body byte is read.

FastAPI reads and parses a route's body before it runs the route's dependencies, and the admin body cap is the
upload cap (gigabytes): a token check as a dependency would let anyone make the server read that much first.
This gate decides from the path, the listener and the ``Authorization`` header alone:

- admin routes off (no token configured) → 404, as if the routes did not exist;
- admin served on its own listener and this connection came in on the public one → 404;
- a missing or wrong bearer token → 401 with ``WWW-Authenticate: Bearer``.

The admin listener's connections carry ``ADMIN_LISTENER_KEY`` in their ASGI scope (set by ``AdminListener``).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from vitserve.service.http.errors import error_response

ADMIN_LISTENER_KEY = "vitserve.admin_listener"


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def token_matches(authorization: str, expected: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <expected>`` (constant-time comparison)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class AdminGuardMiddleware:
    """401/404 for ``/admin`` requests that may not reach the admin routes, without reading their bodies."""

    def __init__(self, app: ASGIApp, token: str | None, separate_listener: bool) -> None:
        self.app, self.token, self.separate_listener = app, token, separate_listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_admin_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        on_admin_listener = bool(scope.get(ADMIN_LISTENER_KEY))
        if self.token is None or (self.separate_listener and not on_admin_listener):
            response = error_response("not_found", f"no route {scope['method']} {scope['path']}", 404)
        else:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if token_matches(header, self.token):
                await self.app(scope, receive, send)
                return
            response = error_response(
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        await response(scope, receive, send)


class AdminListener:
    """The ASGI app behind the admin listener: the same app, with each request's scope marked as coming from
    it (the lifespan runs once, with the public listener)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, ADMIN_LISTENER_KEY: True}
        await self.app(scope, receive, send)
