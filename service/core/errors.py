"""The service's errors and the one table that gives every domain error its code and status, for every door.

Over HTTP each error response is ``{"error": {"code": str, "message": str, "request_id": str}}`` with the status below
(``request_id`` is the request's id, also in the ``X-Request-Id`` header and in its log lines). Image errors carry
their own ``code``/``status`` (``vit.image_errors``); store errors are mapped here; anything else is a bug:
logged with its traceback, answered with a 500 that leaks nothing but an id to find it in the log. The gRPC door
maps the same (code, status) to its own status codes (``service.v2.grpc_server``).
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

from vitserve.model_store.errors import (
    AliasedVersion,
    IntegrityError,
    InvalidCard,
    InvalidName,
    ModelNotFound,
    PromotionRefused,
    StoreError,
    VersionHeld,
)
from vitserve.service.observability import request_context
from vitserve.vit.checkpoint import CheckpointMismatch
from vitserve.vit.image_errors import ImageError


def retry_after_s(wait_s: float) -> int:
    """A wait as the whole seconds of a Retry-After header (at least 1)."""
    return max(1, math.ceil(wait_s))


class ServiceError(Exception):
    """Base of the service's own errors: ``code`` and ``status`` are what the client sees."""

    code: ClassVar[str] = "bad_request"
    status: ClassVar[int] = 400

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ServiceError):
    """Malformed input that is not an image problem: bad base64, an empty request, a bad JSON body."""

    code = "invalid_input"


class InvalidField(ServiceError):
    """A field with an invalid value (``top_k`` out of range, an unknown field): FastAPI's 422, same shape."""

    code = "invalid_request"
    status = 422


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"
    status = 413


class BodyTimeout(ServiceError):
    """The client did not finish sending its body within ``body_timeout_s``: the connection is closed."""

    code = "request_timeout"
    status = 408

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"
    status = 415


class UrlForbidden(ServiceError):
    """A URL input that the URL policy refuses (scheme, host, or an address it resolves to)."""

    code = "url_forbidden"


class UrlFetchFailed(ServiceError):
    """The URL could not be fetched (connection, HTTP status, timeout, too many redirects)."""

    code = "url_fetch_failed"


class ModelNotLoaded(ServiceError):
    """The version exists in the store but this service has not loaded it (``POST /admin/models/{ref}/load``)."""

    code = "model_not_loaded"
    status = 404


class LoadFailed(ServiceError):
    """A version failed to load or warm up; the version that was serving keeps serving."""

    code = "load_failed"
    status = 409


class Conflict(ServiceError):
    code = "conflict"
    status = 409


class Unauthorized(ServiceError):
    code = "unauthorized"
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Unavailable(ServiceError):
    """Retry later: ``retry_after_s`` becomes the Retry-After header."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class Overloaded(Unavailable):
    """The version's queue is full."""

    code = "overloaded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class NotReady(Unavailable):
    code = "not_ready"


class RateLimited(ServiceError):
    """The client is over its request rate or its decoding-CPU rate (``service.client_budgets``)."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(retry_after_s(self.retry_after_s))}


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its result was ready."""

    code = "deadline_exceeded"
    status = 504


# Store and model-library errors: (code, status). Order matters: the first matching class wins.
DOMAIN_ERRORS: tuple[tuple[type[Exception], str, int], ...] = (
    (ModelNotFound, "model_not_found", 404),
    (InvalidName, "invalid_model_reference", 422),
    (PromotionRefused, "promotion_refused", 409),
    (AliasedVersion, "aliased_version", 409),
    (VersionHeld, "version_held", 409),
    (IntegrityError, "integrity_error", 409),
    (InvalidCard, "invalid_card", 422),
    (StoreError, "store_error", 409),
    (CheckpointMismatch, "checkpoint_mismatch", 422),
)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The error JSON; inside a request it carries the request's id and notes the code on its record."""
    body = {"code": code, "message": message}
    record = request_context.current()
    if record is not None:
        record.error_code = code
        body["request_id"] = record.request_id
    return {"error": body}


# An absolute path (two or more components) inside a message: replaced by its last component for clients.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last component: clients learn nothing of the server's
    file system (the full message goes to the server log)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", message)


def describe(err: Exception) -> tuple[str, int, str]:
    """(code, status, message) of a known domain error; raises ``LookupError`` for anything else."""
    if isinstance(err, ServiceError | ImageError):
        return err.code, err.status, str(err)
    for cls, code, status in DOMAIN_ERRORS:
        if isinstance(err, cls):
            return code, status, without_paths(str(err))
    raise LookupError(type(err).__name__)
