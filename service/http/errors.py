"""The HTTP face of the service's errors (``service.core.errors``): FastAPI's handlers, one JSON shape.

Each error response is ``{"error": {"code": str, "message": str, "request_id": str}}`` with the status that
``describe`` gives; anything else is a bug: logged with its traceback, answered with a 500 that leaks nothing but an
id to find it in the log.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitserve.service.core.errors import DOMAIN_ERRORS, ServiceError, describe, error_body
from vitserve.service.observability import request_context
from vitserve.vit.image_errors import ImageError

log = logging.getLogger(__name__)


def error_response(
    code: str, message: str, status: int, headers: dict[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    """The error JSON; under ``/v2`` (a refusal by middleware before the Open Inference Protocol's own handlers
    run) in that protocol's shape, ``{"error": message}``."""
    body = error_body(code, message)
    if path == "/v2" or path.startswith("/v2/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


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
    domain: list[type[Exception]] = [ServiceError, ImageError, *(cls for cls, _, _ in DOMAIN_ERRORS)]
    for cls in domain:
        app.add_exception_handler(cls, _domain_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _bug_handler)
