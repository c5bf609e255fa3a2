"""The listeners of ``vitserve serve``: the public one, and optionally a separate one for ``/admin``.

With ``admin_port`` or ``admin_socket`` set, ``/admin`` is answered only there (404 on the public listener), so
a deployment can keep the admin routes off the network its clients reach (a unix socket, or a port that only
the cluster network or ``kubectl port-forward`` can reach). Both listeners serve the same app in one event
loop; the public server owns the lifespan and the signals, and the admin listener closes when it exits.

Every listener bounds its connections: ``max_connections`` (uvicorn answers 503 beyond it), idle keep-alive
connections close after ``keep_alive_timeout_s``, and a connection whose request headers are not complete
within ``header_timeout_s`` is closed (``service.http.slow_clients``); the body has its own deadline in the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from vitserve.service.http.admin_guard import AdminListener
from vitserve.service.http.slow_clients import header_deadline_protocol
from vitserve.service.settings import Settings


def connection_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config arguments bounding what connections may hold."""
    return {
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": max(1, round(settings.keep_alive_timeout_s)),
        "http": header_deadline_protocol(settings.header_timeout_s),
        "h11_max_incomplete_event_size": 16 * 1024,
    }


class AdminServer(uvicorn.Server):
    """The admin listener's server: no signal handling of its own (the public server's handlers decide)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def admin_server(app: FastAPI, settings: Settings) -> AdminServer | None:
    """The admin listener's server, or None when /admin shares the public listener."""
    if not settings.admin_separate:
        return None
    socket = str(settings.admin_socket) if settings.admin_socket is not None else None
    config = uvicorn.Config(
        AdminListener(app),
        host=settings.host,
        port=settings.admin_port or 0,
        uds=socket,
        lifespan="off",
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        **connection_limits(settings),
    )
    return AdminServer(config)


def run_servers(public: uvicorn.Server, admin: uvicorn.Server | None) -> None:
    """Run the public server (and the admin one beside it) until the public one exits."""
    if admin is None:
        public.run()
        return

    async def both() -> None:
        admin_task = asyncio.create_task(admin.serve())
        try:
            await public.serve()
        finally:
            admin.should_exit = True
            await admin_task

    loop_factory = getattr(public.config, "get_loop_factory", None)  # uvicorn >= 0.36
    if loop_factory is None:
        public.config.setup_event_loop()
        asyncio.run(both())
        return
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(both())
