"""ASGI guards against hostile and slow clients, installed in front of the routes by ``install_hardening``.

- ``AdminGuardMiddleware`` (``service.http.admin_guard``): ``/admin`` is authorised before any body byte is read;
- ``ClientRateMiddleware``: each client's requests (all but probes and ``/admin``) against its request rate,
  before any body byte is read: a client over it while the replica is contended (``core.client_budgets``) gets 429
  with Retry-After, and the refusal costs little; alone, or with capacity to spare, it is let through;
- ``BodyDeadlineMiddleware``: the whole body must arrive within ``body_timeout_s`` of the first read, else 408
  and the connection closes. uvicorn bounds idle keep-alive connections but not a body trickled a few bytes at
  a time, which would otherwise hold its connection (and the admission it was granted) indefinitely.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitserve.service.core.client_budgets import ClientBudgets, client_id, take_request
from vitserve.service.core.errors import BodyTimeout, RateLimited
from vitserve.service.core.metrics import Metrics
from vitserve.service.http.admin_guard import AdminGuardMiddleware
from vitserve.service.http.errors import error_response
from vitserve.service.http.middleware import PROBE_PATHS
from vitserve.service.settings import Settings


class BodyDeadlineMiddleware:
    """Raises ``BodyTimeout`` (408) from ``receive`` once the body has taken longer than ``timeout_s``."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        done = False

        async def timed_receive() -> Message:
            nonlocal deadline, done
            if done:  # after the body, receive only waits for a disconnect: no deadline on that
                return await receive()
            if deadline is None:
                deadline = time.monotonic() + self.timeout_s
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s") from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


class ClientRateMiddleware:
    """Each request takes a token from its client's bucket in ``budgets``; with no whole token left, 429 with
    the wait until the next one if the bucket binds now (``take_request``), else it goes on. Probes and
    ``/admin`` (authorised by its token) are not counted."""

    def __init__(self, app: ASGIApp, budgets: ClientBudgets, header: str | None, metrics: Metrics) -> None:
        self.app, self.budgets, self.header, self.metrics = app, budgets, header, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PROBE_PATHS or path.startswith("/admin/"):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        client = client_id(scope["headers"], peer[0] if peer else None, self.header)
        try:
            take_request(self.budgets, client, self.metrics)
        except RateLimited as err:
            await error_response(err.code, str(err), err.status, err.headers(), path=scope["path"])(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


def install_hardening(app: FastAPI, settings: Settings, metrics: Metrics, client_rates: ClientBudgets | None) -> None:
    """Add the guards; call after the body cap so that they run before it (Starlette wraps in reverse)."""
    app.add_middleware(BodyDeadlineMiddleware, timeout_s=settings.body_timeout_s)
    app.add_middleware(AdminGuardMiddleware, token=settings.admin_token, separate_listener=settings.admin_separate)
    if client_rates is not None:
        app.add_middleware(ClientRateMiddleware, budgets=client_rates, header=settings.client_header, metrics=metrics)
