"""Typed errors mirroring the service's: one class per HTTP status it answers with, the JSON ``code`` kept.

The service answers every error as ``{"error": {"code", "message"}}``; ``error_for`` turns such a response into
the class for its status (``VitserveError`` for a status without one), keeping ``code``, ``message``, ``status``
and the ``X-Request-Id`` the server echoed, if any.
"""

from __future__ import annotations

from typing import ClassVar

import httpx


class VitserveError(Exception):
    """Base of every error this client raises: ``status_code`` (``None`` without an HTTP answer), the service's
    ``code`` and ``message``, and the request id the server echoed."""

    status: ClassVar[int | None] = None

    def __init__(
        self, message: str, *, code: str = "error", status_code: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.request_id = message, code, request_id
        self.status_code = status_code if status_code is not None else self.status

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status_code or 'no answer'} {self.code}: {self.message}{where}"


class ConnectionFailed(VitserveError):
    """No HTTP answer: the server could not be reached, or the connection broke or timed out."""


class ClientError(VitserveError):
    """A 4xx: the request was refused; sending it again will not help."""


class BadRequest(ClientError):
    """400: undecodable image, bad base64, a URL refused or unreachable (``code`` says which)."""

    status = 400


class Unauthorized(ClientError):
    status = 401


class NotFound(ClientError):
    """404: unknown model or version (``model_not_found``), or one the server has not loaded (``model_not_loaded``)."""

    status = 404


class Conflict(ClientError):
    status = 409


class PayloadTooLarge(ClientError):
    """413: too many bytes, pixels or images in one request."""

    status = 413


class UnsupportedMediaType(ClientError):
    status = 415


class InvalidRequest(ClientError):
    """422: a field out of range (``top_k``) or malformed (a model reference)."""

    status = 422


class ServerError(VitserveError):
    """A 5xx other than those below."""

    status = 500


class Unavailable(ServerError):
    """503: the queue is full, the server is not ready or is shutting down; retried by the client, bounded."""

    status = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        code: str = "unavailable",
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status_code=status_code, request_id=request_id)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServerError):
    """504: the request's deadline passed before its result was ready."""

    status = 504


_TYPED = (BadRequest, Unauthorized, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType, InvalidRequest)
_BY_STATUS: dict[int | None, type[VitserveError]] = {c.status: c for c in (*_TYPED, Unavailable, DeadlineExceeded)}


def retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the service sends whole seconds; HTTP dates are not used)."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for(response: httpx.Response) -> VitserveError:
    """The typed error of a non-2xx response."""
    code, message = f"http_{response.status_code}", response.text[:500] or response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ClientError
    request_id = response.headers.get("x-request-id")
    if cls is Unavailable:
        return Unavailable(
            message,
            retry_after_s=retry_after_s(response),
            code=code,
            status_code=response.status_code,
            request_id=request_id,
        )
    return cls(message, code=code, status_code=response.status_code, request_id=request_id)
