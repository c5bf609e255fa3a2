"""The request being served: its id and what it did, in a context variable.

Each door opens a fresh ``RequestRecord`` per request (``request_scope``: the HTTP request middleware, the gRPC
call frame); code below it (the classify stages, the error responses, the logging filter) reads and fills it
through ``current()``. Tasks created while handling the request copy the context, so they share the same
(mutable) record; ``asyncio.to_thread`` copies it too. The batcher's device thread serves many requests at once
and has no record.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vitserve.service.observability.tracing import Tracer

# Client-chosen ids are echoed into headers and logs: printable, no spaces, bounded.
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# W3C trace context: version-traceid-parentid-flags, lower-case hex; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass
class RequestRecord:
    """What one request did; the access log line and the per-version metrics are made from it."""

    request_id: str
    method: str = ""
    path: str = ""  # the HTTP path; for gRPC the call's ``/package.Service/Method``
    protocol: str = "http"  # "http" or "grpc": which door the request came through
    client: str | None = None
    parent_span_id: str | None = None  # from ``traceparent``: the caller's span, parent of the request's span
    route: str = "unmatched"
    status: int = 500  # HTTP status; a gRPC call's is its error's (``core.errors.describe``), 200 when OK
    grpc_status: str | None = None  # gRPC calls only: the status code's name (``OK``, ``NOT_FOUND``, ...)
    model: str | None = None
    version: int | None = None
    images: int = 0
    bytes_in: int = 0
    error_code: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)  # per stage, the slowest image's time
    tracer: Tracer | None = None  # set when the app traces; ``span`` is then the request's span
    span: Any = None

    def add_stage(self, stage: str, ms: float) -> None:
        """Keep the slowest image's time per stage: images run their stages concurrently."""
        self.stage_ms[stage] = max(self.stage_ms.get(stage, 0.0), round(ms, 3))


class RequestObserver(Protocol):
    """Told of every answered request (HTTP or gRPC) by ``request_scope``, once the record is complete."""

    def observe_request(self, record: RequestRecord, seconds: float) -> None:
        """``record`` as the request left it; ``seconds`` from arrival to the end of the answer."""
        ...


_current: ContextVar[RequestRecord | None] = ContextVar("vitserve_request", default=None)


def current() -> RequestRecord | None:
    """The record of the request this code runs for, or ``None`` outside a request."""
    return _current.get()


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record is not None else None


def bind(record: RequestRecord | None) -> object:
    """Make ``record`` current; returns the token for ``unbind``."""
    return _current.set(record)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def new_request_id() -> str:
    """128 random bits as 32 hex digits: the same shape as a W3C trace id, so either can key a trace."""
    return secrets.token_hex(16)


def request_id_from(headers: dict[bytes, bytes]) -> tuple[str, str | None]:
    """(request id, caller's span id or None) from ``X-Request-Id``, else ``traceparent``'s trace id, else new.

    An ``X-Request-Id`` that is not 1-128 characters of ``[A-Za-z0-9._:-]`` is ignored (a new id is made) rather
    than refused: the id is a convenience, never a reason to fail a request.
    """
    parent = None
    traceparent = headers.get(b"traceparent", b"").decode("latin-1").strip()
    match = _TRACEPARENT.match(traceparent)
    if match and match.group(1) != "0" * 32:
        parent = match.group(2)
    given = headers.get(b"x-request-id", b"").decode("latin-1").strip()
    if _ID.match(given):
        return given, parent
    if match and match.group(1) != "0" * 32:
        return match.group(1), parent
    return new_request_id(), None
