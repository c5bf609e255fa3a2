"""The frame of every gRPC call: its record, the caller's identity, the limits REST has, one table of statuses.

Each of the protocol's unary methods is served by a *request-streaming* handler. On the wire a unary call is a
stream of one message, so clients cannot tell; but grpc-python starts a request-streaming handler as soon as the
call's headers arrive, before any byte of its message is read, whereas a unary handler starts only once the
whole message was received and deserialised. So, in order, for every call (``frame``):

1. the ``RequestRecord`` is opened in ``request_scope``, as HTTP's: the id from ``x-request-id`` (or
   ``traceparent``) metadata or a new one, returned in the trailing metadata; one access line on
   ``vitserve.access``, the request observers, a span when tracing;
2. all but the health probes: refused while draining, and one token from the caller's request rate
   (``client_budgets``), the caller being its peer address, never metadata unless ``grpc_client_header`` says
   a trusted proxy sets it. Nothing of the message has been read yet;
3. the message is read, within ``body_timeout_s`` (gRPC itself refuses one over ``max_body_bytes``, from the
   length prefix), then held against the body budget HTTP bodies share (``core.body_budget``) until the answer;
4. only then is it deserialised and served.

What grpc-python does not let this frame see: connections beyond ``grpc_max_connections``, streams beyond
``grpc_max_streams_per_connection`` and calls beyond ``grpc_max_concurrent_rpcs`` are refused (or, for streams,
held back by HTTP/2) by gRPC before any handler runs, so they leave no record; and a message is handed over only
whole, so its bytes count against the budget from its arrival, not while it streams in (while it does, the
memory is bounded by ``grpc_max_concurrent_rpcs × max_body_bytes``).

Errors: every one becomes a gRPC status through ``GRPC_CODES``, from the HTTP status ``core.errors.describe``
gives it, with a message that names no server path; a bug is INTERNAL with only its incident id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from vitserve.service.core.client_budgets import client_id, take_request
from vitserve.service.core.errors import BodyTimeout, InvalidInput, ServiceError, ShuttingDown, describe, without_paths
from vitserve.service.core.live_stats import LiveStats
from vitserve.service.core.metrics import Metrics
from vitserve.service.observability import request_context
from vitserve.service.observability.request_context import RequestObserver, RequestRecord
from vitserve.service.observability.request_scope import request_scope
from vitserve.service.v2.grpc_wire import check_wire

log = logging.getLogger(__name__)

PROBES = frozenset({"ServerLive", "ServerReady"})  # answered whatever the rate and the drain; logged at DEBUG
REQUEST_ID = "x-request-id"

# The one table: the HTTP status of an outcome (``core.errors.describe``) → its gRPC status code. Request
# problems are INVALID_ARGUMENT, as Triton answers them; 499 is a call its client cancelled (or left to expire).
GRPC_CODES: dict[int, grpc.StatusCode] = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,  # the message did not arrive within body_timeout_s
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,  # too many images (a message over the cap is gRPC's RESOURCE_EXHAUSTED)
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# After a call that yields no message, how long to wait for gRPC to cancel it: it does so (at the next turn of the
# event loop, measured) when it refused the message itself, larger than max_receive_message_length.
_REFUSAL_GRACE_S = 0.2


def grpc_code(status: int) -> grpc.StatusCode:
    """``status``'s gRPC code (``GRPC_CODES``; another 4xx is INVALID_ARGUMENT, another 5xx INTERNAL)."""
    return GRPC_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL)


@dataclass(frozen=True)
class Call:
    """What a method needs of its call beyond the message: the gRPC context and the caller's identity."""

    context: Any  # grpc.aio.ServicerContext
    client: str  # the identity the rates and the admission share count against
    request_id: str
    given_id: str | None  # the caller's ``x-request-id``, when it became the request id
    arrived: float  # monotonic time of the call's start: the request's deadline counts from it


Method = Callable[[Any, Call], Awaitable[Any]]


def frame(state: Any, method: str, serve: Method, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
    """The handler of the unary ``method``: ``serve(request, call)`` inside the frame above. ``state`` is the
    app's, read at each call (tests swap the tracer of a running app)."""

    async def handle(request_iterator: Any, context: Any) -> Any:
        arrived = time.monotonic()
        record = open_record(context, method)
        with request_scope(record, observers_of(state), state.tracer, quiet=method in PROBES):
            try:
                call = open_call(context, record, state.settings.grpc_client_header, arrived)
                if method not in PROBES:
                    admit(state, call.client)
                raw = await receive_one(context, record, state.settings.body_timeout_s)
                budget = getattr(state, "body_budget", None)
                with budget.hold(len(raw)) if budget is not None else contextlib.nullcontext():
                    request = await parse(request_type, raw, max_images=state.settings.max_images)
                    response = await serve(request, call)
            except asyncio.CancelledError:
                if record.error_code is None:
                    note(record, 499, "cancelled")
                raise
            except Exception as err:
                code, message, trailers = refusal(err, record)
                await context.abort(code, message, trailing_metadata=trailers)  # raises
                raise
            note(record, 200, None)
            context.set_trailing_metadata(((REQUEST_ID, record.request_id),))
            return response

    return grpc.stream_unary_rpc_method_handler(handle, response_serializer=response_type.SerializeToString)


def open_record(context: Any, method: str) -> RequestRecord:
    request_id, parent = request_context.request_id_from(dict(_metadata(context)))
    return RequestRecord(
        request_id=request_id,
        parent_span_id=parent,
        method="POST",  # what every gRPC call is on the wire (HTTP/2)
        path=f"/inference.GRPCInferenceService/{method}",
        protocol="grpc",
        client=peer_address(context.peer() or "")[1],
        route=f"grpc:{method}",
    )


def open_call(context: Any, record: RequestRecord, header: str | None, arrived: float) -> Call:
    given = dict(_metadata(context)).get(REQUEST_ID.encode(), b"").decode("latin-1").strip()
    client = grpc_client(context, header)
    return Call(context, client, record.request_id, given if given == record.request_id else None, arrived)


def admit(state: Any, client: str) -> None:
    """Before any byte of the message is read: refused while draining, else one token of the request rate."""
    if state.lifecycle.draining:
        raise ShuttingDown("the server is shutting down; retry on another replica", retry_after_s=1)
    if state.client_rates is not None:
        take_request(state.client_rates, client, state.metrics)


async def receive_one(context: Any, record: RequestRecord, timeout_s: float) -> bytes:
    """The call's one message, within ``timeout_s``; ``BodyTimeout`` (408) past it, ``InvalidInput`` for none."""
    try:
        async with asyncio.timeout(timeout_s):
            message = await context.read()
    except TimeoutError:
        raise BodyTimeout(f"the request message did not arrive within {timeout_s:g} s") from None
    if message is aio.EOF:
        # No message: the client sent none, or gRPC refused it (over max_body_bytes) and is cancelling the call;
        # the record says so if the cancellation comes (the client already has gRPC's RESOURCE_EXHAUSTED).
        note(record, 413, "payload_too_large")
        record.grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED.name
        await asyncio.sleep(_REFUSAL_GRACE_S)
        record.error_code = None
        raise InvalidInput("the call carried no request message")
    record.bytes_in = len(message)
    return message if isinstance(message, bytes) else bytes(message)  # no second copy of 20 MiB on the loop


async def parse(request_type: Any, raw: bytes, *, max_images: int) -> Any:
    """``raw`` as a ``request_type``, its entries counted on the wire first (``grpc_wire``) and built off the event
    loop: what is left to build is a handful of fields, but a large image's bytes are still copied."""
    check_wire(raw, request_type.DESCRIPTOR.full_name, max_images=max_images)
    try:
        return await asyncio.to_thread(request_type.FromString, raw)
    except DecodeError:
        raise InvalidInput(f"the request message is not a valid {request_type.DESCRIPTOR.full_name}") from None


def note(record: RequestRecord, status: int, error_code: str | None) -> None:
    record.status, record.error_code, record.grpc_status = status, error_code, grpc_code(status).name


def refusal(err: Exception, record: RequestRecord) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status, message and trailing metadata that answer ``err``, noted on ``record``; a bug is logged."""
    try:
        code, status, message = describe(err)
    except LookupError:
        log.error("unhandled error on gRPC %s", record.path, exc_info=err)
        code, status = "internal_error", 500
        message = f"internal error (incident {record.request_id}); see the server log"
    shown = without_paths(message)
    if shown != str(err) and status != 500:
        log.warning("%s (request %s): %s", code, record.request_id, err)
    note(record, status, code)
    trailers = [(REQUEST_ID, record.request_id)]
    retry_after = err.headers().get("Retry-After") if isinstance(err, ServiceError) else None
    if retry_after:
        trailers.append(("retry-after", retry_after))
    return grpc_code(status), shown, tuple(trailers)


def grpc_client(context: Any, header: str | None) -> str:
    """The caller's identity: ``header`` from the call's metadata when a trusted proxy sets it
    (``grpc_client_header``), else the peer's address without its port, so that a new connection is not a new
    client (``ipv4:10.0.0.7:53114`` → ``10.0.0.7``, ``ipv6:%5B::1%5D:53114`` → ``::1``)."""
    return client_id(_metadata(context), peer_address(context.peer() or "")[0], header)


def peer_address(peer: str) -> tuple[str, str]:
    """(address, address:port) of a gRPC peer string; a unix socket's peers are all one client, ``unix``."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return kind or "unknown", kind or "unknown"
    rest = unquote(rest)
    if rest.startswith("["):
        return rest[1:].partition("]")[0], rest
    return (rest.partition(":")[0] if kind == "ipv4" else rest), rest


def _metadata(context: Any) -> list[tuple[bytes, bytes]]:
    """The call's text metadata as header pairs (binary ``-bin`` values are not identities or ids)."""
    return [
        (key.encode("latin-1"), value.encode("latin-1", "replace"))
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    ]


def observers_of(state: Any) -> tuple[RequestObserver, ...]:
    """The request observers of a gRPC call: the per-version series, the per-route counts, /stats for inference."""
    return state.metrics.per_version, RouteCounts(state.metrics), InferStats(state.live_stats)


@dataclass(frozen=True)
class RouteCounts:
    """``vitserve_requests_total{route,status}`` and ``vitserve_request_seconds{route}``, as HTTP's middleware counts
    its routes; the route is ``grpc:<Method>``."""

    metrics: Metrics

    def observe_request(self, record: RequestRecord, seconds: float) -> None:
        self.metrics.requests.labels(record.route, str(record.status)).inc()
        self.metrics.request_seconds.labels(record.route).observe(seconds)


@dataclass(frozen=True)
class InferStats:
    """The live figures of ``/stats`` count ``ModelInfer`` calls beside ``POST /classify``."""

    stats: LiveStats

    def observe_request(self, record: RequestRecord, seconds: float) -> None:
        if record.route == "grpc:ModelInfer":
            self.stats.record(seconds, record.status)
