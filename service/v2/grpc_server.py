"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``grpc_port``.

Served by the HTTP service's own process and event loop (``grpc.aio``), so both protocols share one batcher
per version, one admission count, one decode pool, one body budget and the per-client rates; started after the
default model is warm and stopped (in-flight calls finish within ``drain_timeout_s``) before the versions
drain. Every call runs in ``grpc_calls.frame``: its record (access line, metrics, span, ``/stats``), the caller's
identity and rate before its message is read, the receive deadline and the body budget, and one table from the
service's errors to gRPC statuses (503 → UNAVAILABLE and 429 → RESOURCE_EXHAUSTED with a ``retry-after``
trailer, 504 → DEADLINE_EXCEEDED, ...); the call's gRPC deadline shortens the request's like REST's ``timeout``.
The listener's own bounds (connections, streams per connection, calls at once, idle and age) are gRPC options.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI
from grpc import aio

from vitserve.model_store.errors import ModelNotFound
from vitserve.service.core.errors import InvalidInput
from vitserve.service.v2.grpc_calls import Call, frame
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb
from vitserve.service.v2.protocol import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    InferenceProtocol,
    InferRequest,
    InferResponse,
    reference,
)
from vitserve.service.v2.tensors import (
    BYTES,
    FP32,
    InputTensor,
    OutputRequest,
    TensorSpec,
    check_declared,
    fp32_from_raw,
    raw_of,
    unpack_bytes,
)

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"


class InferenceServicer:
    """The six calls of the protocol over the app's resources (``InferenceProtocol``); each runs in the frame."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def _protocol(self) -> InferenceProtocol:
        return InferenceProtocol.from_state(self.state)

    async def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._protocol().ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        with only_the_name(request.name, request.version):
            ready = await self._protocol().model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, call: Call) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=list(EXTENSIONS))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, call: Call) -> pb.ModelMetadataResponse:
        with only_the_name(request.name, request.version):
            meta = await self._protocol().model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[_tensor_metadata(s) for s in meta.inputs],
            outputs=[_tensor_metadata(s) for s in meta.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        arrived = call.arrived
        # Off the loop: the raw contents (up to MAX_BODY_BYTES) are copied out of the message here.
        decoded = await asyncio.to_thread(
            functools.partial(
                decode_infer,
                deadline_s=call.context.time_remaining(),
                fallback_id=call.given_id,
                max_images=self.state.settings.max_images,
            ),
            request,
        )
        with only_the_name(request.model_name, request.model_version):
            response = await self._protocol().infer(decoded, arrived=arrived, client=call.client)
        return encode_infer(response)


@contextlib.contextmanager
def only_the_name(name: str, version: str) -> Iterator[None]:
    """``ModelNotFound`` naming only the reference asked for: the store's own message lists what it holds."""
    try:
        yield
    except ModelNotFound as err:
        raise ModelNotFound(f"model {reference(name, version or None)!r} not found") from err


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def decode_infer(
    request: pb.ModelInferRequest, *, deadline_s: float | None, fallback_id: str | None, max_images: int
) -> InferRequest:
    """The protocol request of a ``ModelInferRequest``: raw contents (one per input) or typed contents. The one
    input's name, datatype and declared shape are checked before any element is unpacked, and no more elements
    than the shape declares are ever built (as on REST: ``tensors.check_declared``)."""
    if len(request.inputs) != 1:  # counted before any per-input work: a message may carry a million of them
        raise InvalidInput(f"expected exactly one input ('image' BYTES or 'pixels' FP32), got {len(request.inputs)}")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        count = check_declared(tensor.name, tensor.datatype, tensor.shape, max_images=max_images)
        elements: list[bytes] | np.ndarray
        if tensor.datatype == BYTES:
            elements = _bytes_elements(tensor, raw[i] if raw else None, what, count)
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


def _bytes_elements(tensor: Any, raw: bytes | None, what: str, count: int) -> list[bytes]:
    if raw is not None:
        return unpack_bytes(raw, what, count=count)
    if len(tensor.contents.bytes_contents) != count:  # counted before a list of them is built
        raise InvalidInput(
            f"{what}: {len(tensor.contents.bytes_contents)} bytes_contents for shape {list(tensor.shape)}"
        )
    return list(tensor.contents.bytes_contents)


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


def service_handler(state: Any) -> grpc.GenericRpcHandler:
    """The servicer's calls under the protocol's service name (no generated service stubs needed)."""
    servicer = InferenceServicer(state)
    calls: dict[str, tuple[Any, Any]] = {
        "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    }
    handlers = {
        name: frame(state, name, getattr(servicer, name), request, response)
        for name, (request, response) in calls.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def server_options(settings: Any) -> list[tuple[str, int]]:
    """The listener's bounds as gRPC core options (README "Limits and hardening")."""
    longest_call_s = settings.body_timeout_s + settings.request_timeout_s
    return [
        ("grpc.max_receive_message_length", settings.max_body_bytes),  # REST's body cap, checked from the prefix
        ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
        ("grpc.max_concurrent_streams", settings.grpc_max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", _ms(settings.header_timeout_s)),  # HTTP's header deadline
        ("grpc.max_connection_idle_ms", _ms(settings.grpc_idle_timeout_s)),
        ("grpc.max_connection_age_ms", _ms(settings.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", _ms(longest_call_s)),
        ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
    ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1e3))


async def start(state: Any) -> aio.Server | None:
    """Serve gRPC on ``settings.grpc_port`` (``None``: off) on the HTTP host; the bound port goes to
    ``state.grpc_port`` (port 0 picks a free one). Raises ``RuntimeError`` when the port cannot be bound."""
    settings = state.settings
    if settings.grpc_port is None:
        return None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server = aio.server(options=server_options(settings), maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs)
    server.add_generic_rpc_handlers((service_handler(state),))
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
