"""The bytes of request bodies held at once, over every request of every door: one budget for HTTP and gRPC.

It bounds the memory (and the multipart files spilled to the temporary directory) that concurrent bodies can
take, however many connections send them. HTTP charges a body as it streams in (its Content-Length at once,
``service.http.middleware.BodyLimitMiddleware``); gRPC charges a message once gRPC hands it over whole
(``service.v2.grpc_calls``). Either way the bytes are held until the answer, and a body that does not fit is
refused with ``bodies_busy()`` (503 + Retry-After; gRPC UNAVAILABLE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from vitserve.service.core.errors import Overloaded


class BodyBudget:
    """``limit`` bytes shared by every body; used from the event loop only (no locking needed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """``size`` bytes until the block ends, or ``bodies_busy()`` at once when they do not fit."""
        if not self.take(size):
            raise bodies_busy()
        try:
            yield
        finally:
            self.give(size)


def bodies_busy() -> Overloaded:
    return Overloaded("the server is receiving too many request bodies at once; retry shortly", retry_after_s=1)
