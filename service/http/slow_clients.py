"""A deadline on request headers, which uvicorn does not bound: a connection that has not sent complete headers
within ``header_timeout_s`` of connecting (or of starting its next request) is closed.

uvicorn closes idle keep-alive connections and bounds how many connections it serves, but a client that sends
headers a byte at a time (slowloris) or connects and sends nothing keeps its connection, and a slot of
``limit_concurrency``, for as long as it likes. The body has its own deadline in the app
(``service.http.hardening.BodyDeadlineMiddleware``).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header deadline; ``header_timeout_s`` is set by the factory."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request headers within %g s",
                self.client,
                self.header_timeout_s,
            )
            self.transport.close()


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": timeout_s})
