"""The Open Inference Protocol's REST routes under ``/v2``, beside the service's own API.

Errors are the protocol's ``{"error": message}``, with the status ``service.http.errors`` maps each error to
(Retry-After included). Readiness: ``/v2/health/ready`` is 200 or 503; a model's ``/ready`` is 200 when
requests for it would run now, 400 when the version exists but is not loaded here (as Triton answers), 404
when the store has no such model or version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitserve.service.core.errors import ServiceError, UnsupportedMediaType, describe, without_paths
from vitserve.service.inputs.body import read_body, request_client
from vitserve.service.v2.protocol import EXTENSIONS, SERVER_NAME, SERVER_VERSION, InferenceProtocol, ModelMetadata
from vitserve.service.v2.rest_codec import HEADER_LENGTH, decode_body, encode_response
from vitserve.service.v2.schemas import (
    PROTOCOL_ERRORS,
    InferRequestBody,
    InferResponseBody,
    LiveBody,
    ModelMetadataBody,
    ModelReadyBody,
    ReadyBody,
    ServerMetadataBody,
    inline_schema,
)

log = logging.getLogger(__name__)


def protocol_error(err: Exception) -> JSONResponse | None:
    """The protocol's error response for a known error; ``None`` for anything else (a bug). The message carries
    no server path (cut by ``without_paths``; the full one goes to the server log)."""
    headers: dict[str, str] | None = None
    if isinstance(err, StarletteHTTPException):
        status, message, headers = err.status_code, str(err.detail), dict(err.headers or {})
    elif isinstance(err, RequestValidationError):
        status, message = 422, "; ".join(str(e.get("msg", "invalid")) for e in err.errors()) or "invalid request"
    else:
        try:
            _, status, message = describe(err)
        except LookupError:
            return None
        headers = err.headers() if isinstance(err, ServiceError) else None
    public = without_paths(message)
    if public != message:
        log.warning("/v2 error %d: %s", status, message)
    return JSONResponse({"error": public}, status_code=status, headers=headers)


class ProtocolRoute(APIRoute):
    """A route whose errors answer in the protocol's shape; unknown exceptions go on to the app's 500 handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def protocol_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as err:
                answer = protocol_error(err)
                if answer is None:
                    raise
                return answer

        return protocol_handler


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"], route_class=ProtocolRoute)

_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(InferRequestBody)},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"binary tensor data extension: {HEADER_LENGTH} bytes of JSON, then the tensors",
            },
        },
    }
}


@router.get("", response_model=ServerMetadataBody, summary="Server metadata")
async def server_metadata() -> ServerMetadataBody:
    return ServerMetadataBody(name=SERVER_NAME, version=SERVER_VERSION, extensions=list(EXTENSIONS))


@router.get("/health/live", response_model=LiveBody, summary="The server is alive")
async def live() -> LiveBody:
    return LiveBody(live=True)


@router.get("/health/ready", response_model=ReadyBody, responses={503: {"model": ReadyBody}}, summary="Ready")
async def ready(request: Request) -> JSONResponse:
    is_ready = InferenceProtocol.from_state(request.app.state).ready()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", response_model=ModelMetadataBody, responses=PROTOCOL_ERRORS, summary="Model metadata")
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadataBody, responses=PROTOCOL_ERRORS)
async def model_metadata(request: Request, name: str, version: str | None = None) -> ModelMetadataBody:
    meta = await InferenceProtocol.from_state(request.app.state).model_metadata(name, version)
    return metadata_body(meta)


def metadata_body(meta: ModelMetadata) -> ModelMetadataBody:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return ModelMetadataBody.model_validate(
        {
            "name": meta.name,
            "versions": meta.versions,
            "platform": meta.platform,
            "inputs": tensors(meta.inputs),
            "outputs": tensors(meta.outputs),
        }
    )


@router.get("/models/{name}/ready", response_model=ModelReadyBody, responses=PROTOCOL_ERRORS, summary="Model ready")
@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReadyBody, responses=PROTOCOL_ERRORS)
async def model_ready(request: Request, name: str, version: str | None = None) -> JSONResponse:
    is_ready = await InferenceProtocol.from_state(request.app.state).model_ready(name, version)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 400)


@router.post(
    "/models/{name}/infer",
    response_model=InferResponseBody,
    responses=PROTOCOL_ERRORS,
    openapi_extra=_INFER_BODY,
    summary="Inference: images (BYTES) or pixels (FP32) → probabilities, logits or top-k classes",
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferResponseBody,
    responses=PROTOCOL_ERRORS,
    openapi_extra=_INFER_BODY,
)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    arrived = time.monotonic()
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not accepted; send the body uncompressed")
    decode = partial(
        decode_body,
        await read_body(request),
        request.headers.get(HEADER_LENGTH),
        model=name,
        version=version,
        fallback_id=request.headers.get("x-request-id"),
        max_images=request.app.state.settings.max_images,
    )
    infer_request, binary_default = await asyncio.to_thread(decode)  # bounded steps: the loop keeps running
    client = request_client(request)
    response = await InferenceProtocol.from_state(request.app.state).infer(
        infer_request, arrived=arrived, client=client
    )
    body, headers = encode_response(response, binary_default=binary_default)
    return Response(body, headers=headers)
