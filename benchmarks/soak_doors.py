"""The soak's three doors: ``/classify``, the Open Inference Protocol over ``/v2`` REST and over gRPC.

What every soak client shares: a good request at each door (one JPEG in; its outcome, and for ``/classify`` the
server's own timings, out), gRPC calls made from the protocol's messages alone, and how an outcome is named and
judged. Outcomes are strings: an HTTP status (``"200"``, ``"429"``), a gRPC code name (``"OK"``,
``"RESOURCE_EXHAUSTED"``), or the exception that stood for an answer (``"ReadTimeout"``). A gRPC error that did
not come from the app (no ``x-request-id`` in its trailers: a connection refused or closed, the client's own
deadline) gets `` (transport)`` after its code.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

DOORS = ("classify", "v2", "grpc")
CLIENT_HEADER = "x-soak-client"  # the soak's "trusted proxy" header (HTTP) and metadata key (gRPC)
GRPC_SERVICE = "/inference.GRPCInferenceService/"
HEADER_LENGTH = "Inference-Header-Content-Length"
TOP_K = 5
OK = frozenset({"200", "OK"})
# What a 5xx is at the gRPC door: the codes ``service.v2.grpc_calls.GRPC_CODES`` gives 500, 503 and 504
# (DEADLINE_EXCEEDED, which the app's 408 also gets: ``grpc_outcome`` tells them apart), and UNKNOWN (an
# exception that escaped the app) or DATA_LOSS.
GRPC_5XX = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
LATE_MESSAGE = "did not arrive within"  # the app's BodyTimeout (408) message

# One (server total, decode, queue, infer) ms per good /classify answer: the server's own account.
Stages = tuple[float, float, float, float]


def is_failure(outcome: str) -> bool:
    """Whether an outcome is a server failure: an HTTP 5xx, or an app-answered gRPC code that stands for one."""
    return outcome.startswith("5") or outcome in GRPC_5XX


def grpc_outcome(err: grpc.aio.AioRpcError) -> str:
    """The code's name; ``(late)`` for the app's 408 (a message that did not arrive in time), ``(transport)``
    when the app did not answer."""
    name = err.code().name
    if not any(key == "x-request-id" for key, _ in err.trailing_metadata() or ()):
        return f"{name} (transport)"
    return f"{name} (late)" if LATE_MESSAGE in (err.details() or "") else name


def packed(*elements: bytes) -> bytes:
    """BYTES elements in the protocol's raw form: each prefixed by its uint32 little-endian length."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def grpc_call(channel: grpc.aio.Channel, method: str, response_type: Any) -> Any:
    """A unary call on the protocol's service, from the messages alone (what any gRPC client does)."""
    return channel.unary_unary(
        GRPC_SERVICE + method,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_type.FromString,
    )


def grpc_infer_stream(channel: grpc.aio.Channel) -> Any:
    """``ModelInfer`` as a request stream: a client that decides when (or whether) its message goes."""
    return channel.stream_unary(
        GRPC_SERVICE + "ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def infer_request(model: str, *images: bytes, top_k: int | None = TOP_K) -> pb.ModelInferRequest:
    """``ModelInfer`` with an ``image`` BYTES ``[N]`` input (raw contents), top ``top_k`` probabilities."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(packed(*images))
    if top_k is not None:
        request.outputs.add(name="probabilities").parameters["classification"].int64_param = top_k
    return request


def v2_body(header: dict[str, Any], binary: bytes = b"") -> tuple[bytes, dict[str, str]]:
    """A ``/v2`` infer body: the JSON header, then ``binary`` (the binary tensor data extension) when given."""
    text = json.dumps(header).encode()
    if not binary:
        return text, {"content-type": "application/json"}
    return text + binary, {HEADER_LENGTH: str(len(text)), "content-type": "application/octet-stream"}


def v2_image_body(*images: bytes) -> tuple[bytes, dict[str, str]]:
    """``image`` BYTES ``[N]`` as binary data, top ``TOP_K`` probabilities: what a Triton client sends."""
    raw = packed(*images)
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(images)],
        "parameters": {"binary_data_size": len(raw)},
    }
    outputs = [{"name": "probabilities", "parameters": {"classification": TOP_K}}]
    return v2_body({"inputs": [tensor], "outputs": outputs}, raw)


@dataclass
class DoorClient:
    """One client's connection to one door, under one identity; ``send`` posts a JPEG and names the outcome."""

    door: str
    model: str
    identity: str | None  # None: no trusted header, and a forged x-forwarded-for on every request (a spoofer)
    http: httpx.AsyncClient | None = None
    channel: grpc.aio.Channel | None = None

    async def send(self, jpeg: bytes) -> tuple[str, Stages | None]:
        """The outcome, and the server's timings when the door reports them (``/classify``)."""
        try:
            if self.channel is not None:
                return await self._grpc(self.channel, jpeg), None
            if self.http is not None:
                return await self._http(self.http, jpeg)
        except httpx.HTTPError as err:
            return type(err).__name__, None
        except grpc.aio.AioRpcError as err:
            return grpc_outcome(err), None
        raise ValueError(f"a DoorClient for {self.door} without a connection")

    def who(self) -> dict[str, str]:
        """The header (or metadata) that says who sends: the trusted one, or a forged x-forwarded-for."""
        if self.identity is None:
            return {"x-forwarded-for": f"198.51.100.{random.randrange(1, 255)}"}
        return {CLIENT_HEADER: self.identity}

    async def _http(self, http: httpx.AsyncClient, jpeg: bytes) -> tuple[str, Stages | None]:
        if self.door == "classify":
            r = await http.post("/classify", content=jpeg, headers={**self.who(), "content-type": "image/jpeg"})
            if r.status_code != 200:
                return str(r.status_code), None
            body = r.json()
            t = body["results"][0]["timings"]
            return "200", (body["total_ms"], t["decode_ms"], t["queue_ms"], t["infer_ms"])
        body, headers = v2_image_body(jpeg)
        r = await http.post(f"/v2/models/{self.model}/infer", content=body, headers={**self.who(), **headers})
        return str(r.status_code), None

    async def _grpc(self, channel: grpc.aio.Channel, jpeg: bytes) -> str:
        call = grpc_call(channel, "ModelInfer", pb.ModelInferResponse)
        await call(infer_request(self.model, jpeg), metadata=tuple(self.who().items()), timeout=30)
        return "OK"


@dataclass(frozen=True)
class Doors:
    """Where the server's doors are: its HTTP URL, its gRPC target (host:port) and the model's name."""

    url: str
    grpc_target: str
    model: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_target.rsplit(":", 1)[1])

    def channel(self) -> grpc.aio.Channel:
        """A channel of its own (a connection of its own): clients do not share one."""
        return grpc.aio.insecure_channel(self.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])


@contextlib.asynccontextmanager
async def open_door(doors: Doors, door: str, identity: str | None) -> AsyncIterator[DoorClient]:
    """A ``DoorClient`` at ``door`` (one of ``DOORS``) with a connection of its own."""
    if door == "grpc":
        async with doors.channel() as channel:
            yield DoorClient(door, doors.model, identity, channel=channel)
        return
    async with httpx.AsyncClient(base_url=doors.url, timeout=30) as http:
        yield DoorClient(door, doors.model, identity, http=http)
