"""The service's errors and the one place that maps every domain error to HTTP.

Each error response is ``{"error": {"code": str, "message": str, "request_id": str}}`` with the status below
(``request_id`` is the request's id, also in the ``X-Request-Id`` header and in its log lines). Image errors carry
their own ``code``/``status`` (``vit.image_errors``); store errors are mapped here; anything else is a bug:
logged with its traceback, answered with a 500 that leaks nothing but an id to find it in the log.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitserve.model_store.errors import (
    AliasedVersion,
    IntegrityError,
    InvalidName,
    ModelNotFound,
    PromotionRefused,
    StoreError,
    VersionHeld,
)
from vitserve.service.client_budgets import retry_after_s
from vitserve.service.observability import request_context
from vitserve.vit.checkpoint import CheckpointMismatch
from vitserve.vit.image_errors import ImageError

log = logging.getLogger(__name__)


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
_DOMAIN: tuple[tuple[type[Exception], str, int], ...] = (
    (ModelNotFound, "model_not_found", 404),
    (InvalidName, "invalid_model_reference", 422),
    (PromotionRefused, "promotion_refused", 409),
    (AliasedVersion, "aliased_version", 409),
    (VersionHeld, "version_held", 409),
    (IntegrityError, "integrity_error", 409),
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


def error_response(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


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
    for cls, code, status in _DOMAIN:
        if isinstance(err, cls):
            return code, status, without_paths(str(err))
    raise LookupError(type(err).__name__)


async def _domain_handler(request: Request, err: Exception) -> JSONResponse:
    code, status, message = describe(err)
    if message != str(err):
        request_id = getattr(request.state, "request_id", None)
        log.warning("%s (request %s): %s", code, request_id or "-", err)
    headers = err.headers() if isinstance(err, ServiceError) else None
    return error_response(code, message, status, headers)


async def _http_handler(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}
    code = codes.get(err.status_code, "http_error")
    message = err.detail if isinstance(err.detail, str) else str(err.detail)
    if err.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    return error_response(code, message, err.status_code, dict(err.headers or {}))


async def _validation_handler(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response("invalid_request", "; ".join(parts) or "invalid request", 422)


async def _bug_handler(request: Request, err: Exception) -> JSONResponse:
    incident = request_context.current_request_id() or uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", incident, request.method, request.url.path, exc_info=err)
    return error_response("internal_error", f"internal error (incident {incident}); see the server log", 500)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the JSON shape above (FastAPI's own 404/405/422 included)."""
    domain: list[type[Exception]] = [ServiceError, ImageError, *(cls for cls, _, _ in _DOMAIN)]
    for cls in domain:
        app.add_exception_handler(cls, _domain_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _bug_handler)
