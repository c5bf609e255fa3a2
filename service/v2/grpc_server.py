"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``grpc_port``.

Served by the HTTP service's own process and event loop (``grpc.aio``), so both protocols share one batcher
per version, one admission count and one decode pool; started after the default model is warm and stopped
(in-flight calls finish within ``drain_timeout_s``) before the versions drain. Errors are gRPC statuses
mapped from the service's HTTP statuses (503 → UNAVAILABLE and 429 → RESOURCE_EXHAUSTED with a ``retry-after``
trailer, 504 → DEADLINE_EXCEEDED, ...); the call's gRPC deadline shortens the request's like REST's ``timeout``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI
from grpc import aio

from vitserve.service.core.client_budgets import client_id, take_request
from vitserve.service.core.errors import InvalidInput, ServiceError, ShuttingDown, describe
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb
from vitserve.service.v2.protocol import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    InferenceProtocol,
    InferRequest,
    InferResponse,
)
from vitserve.service.v2.tensors import (
    BYTES,
    FP32,
    InputTensor,
    OutputRequest,
    TensorSpec,
    fp32_from_raw,
    raw_of,
    unpack_bytes,
)

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

# The service's HTTP statuses as gRPC codes (as Triton maps them: request problems are INVALID_ARGUMENT).
_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class InferenceServicer:
    """The six calls of the protocol over the app's resources (``InferenceProtocol``)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def _protocol(self) -> InferenceProtocol:
        return InferenceProtocol.from_state(self.state)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._protocol().ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self._protocol().model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=list(EXTENSIONS))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = await self._protocol().model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[_tensor_metadata(s) for s in meta.inputs],
            outputs=[_tensor_metadata(s) for s in meta.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        arrived = time.monotonic()
        if self.state.lifecycle.draining:
            raise ShuttingDown("the server is shutting down; retry on another replica", retry_after_s=1)
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id")
        decoded = decode_infer(request, deadline_s=context.time_remaining(), fallback_id=request_id)
        client = grpc_client(context, self.state.settings.client_header)
        if self.state.client_rates is not None:
            take_request(self.state.client_rates, client, self.state.metrics)
        return encode_infer(await self._protocol().infer(decoded, arrived=arrived, client=client))


def grpc_client(context: Any, header: str | None) -> str:
    """The caller's identity, as REST's (``client_budgets.client_id``): ``header`` from the call's metadata when a
    trusted proxy sets it, else the peer's address without its port (``ipv4:10.0.0.7:53114`` → ``10.0.0.7``,
    ``ipv6:[::1]:53114`` → ``::1``), so that new connections do not make a new client."""
    peer = context.peer() or ""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        peer = address.rsplit(":", 1)[0].strip("[]")
    metadata = [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in context.invocation_metadata() or ()]
    return client_id(metadata, peer, header)


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def decode_infer(request: pb.ModelInferRequest, *, deadline_s: float | None, fallback_id: str | None) -> InferRequest:
    """The protocol request of a ``ModelInferRequest``: raw contents (one per input) or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        elements: list[bytes] | np.ndarray
        if tensor.datatype == BYTES:
            elements = unpack_bytes(raw[i], what) if raw else list(tensor.contents.bytes_contents)
        elif tensor.datatype == FP32:
            elements = fp32_from_raw(raw[i], what) if raw else np.asarray(tensor.contents.fp32_contents, np.float32)
        else:
            raise InvalidInput(f"{what}: datatype {tensor.datatype} is not accepted; expected BYTES or FP32")
        inputs.append(InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), elements))
    outputs = [
        OutputRequest(o.name, classification=_int_param(o.parameters, "classification")) for o in request.outputs
    ]
    timeouts = [t for t in (deadline_s, _timeout_s(request)) if t is not None]
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        inputs=inputs,
        outputs=outputs or None,
        id=request.id or fallback_id,
        timeout_s=min(timeouts) if timeouts else None,
    )


def _int_param(parameters: Any, key: str) -> int | None:
    if key not in parameters:
        return None
    parameter = parameters[key]
    if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"parameter {key!r} must be an integer")
    value: int = getattr(parameter, parameter.WhichOneof("parameter_choice"))
    return value


def _timeout_s(request: pb.ModelInferRequest) -> float | None:
    """Triton's ``timeout`` request parameter, in microseconds."""
    micros = _int_param(request.parameters, "timeout")
    return micros / 1e6 if micros else None


def encode_infer(response: InferResponse) -> pb.ModelInferResponse:
    """Every output as raw contents (FP32 little-endian; BYTES length-prefixed), as Triton answers."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        message.raw_output_contents.append(raw_of(output))
    return message


def _mapped(method: str, handler: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    """``handler`` with the service's errors turned into gRPC statuses (and anything else into INTERNAL)."""

    async def call(request: Any, context: Any) -> Any:
        try:
            return await handler(request, context)
        except Exception as err:
            try:
                _, status, message = describe(err)
            except LookupError:
                incident = uuid.uuid4().hex[:12]
                log.exception("unhandled error %s in gRPC %s", incident, method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the log")
                raise
            if isinstance(err, ServiceError) and err.headers().get("Retry-After"):
                context.set_trailing_metadata((("retry-after", err.headers()["Retry-After"]),))
            await context.abort(_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT), message)
            raise

    return call


def service_handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The servicer's calls under the protocol's service name (no generated service stubs needed)."""
    calls: dict[str, tuple[Any, Any]] = {
        "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _mapped(name, getattr(servicer, name)),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in calls.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def start(state: Any) -> aio.Server | None:
    """Serve gRPC on ``settings.grpc_port`` (``None``: off) on the HTTP host; the bound port goes to
    ``state.grpc_port`` (port 0 picks a free one). Raises ``RuntimeError`` when the port cannot be bound."""
    settings = state.settings
    if settings.grpc_port is None:
        return None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),  # REST's body cap
            ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        ]
    )
    server.add_generic_rpc_handlers((service_handler(InferenceServicer(state)),))
    try:
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    except RuntimeError as err:
        raise RuntimeError(f"cannot serve gRPC on {host}:{settings.grpc_port}: {err}") from None
    if port == 0:
        raise RuntimeError(f"cannot serve gRPC on {host}:{settings.grpc_port}: the address is in use or invalid")
    await server.start()
    state.grpc_port = port
    log.info("gRPC (Open Inference Protocol) on %s:%d", host, port)
    return server


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The gRPC server's life inside the app's: entered once the default model is warm."""
    server = await start(app.state)
    try:
        yield
    finally:
        if server is not None:
            await server.stop(grace=app.state.settings.drain_timeout_s)
            log.info("gRPC stopped")
