"""The three doors of an inference request behind one interface, for the protocol parity matrix
(``test_protocol_parity``): ``POST /classify``, the Open Inference Protocol's ``POST /v2/models/{name}/infer``
and gRPC ``inference.GRPCInferenceService/ModelInfer``.

Each door sends the same hostile request its own way (a bomb of many entries in its JSON form, of many elements
in its binary form, a huge declared shape, a body that never completes, ...) and answers with an ``Outcome``
whose ``cls`` is the same vocabulary whatever the door:

    ok            200 / OK
    bad_input     400, 415, 422 / INVALID_ARGUMENT
    too_large     413 / INVALID_ARGUMENT for what the service refuses as too large (its 413), RESOURCE_EXHAUSTED
                  without retry-after for a message over gRPC's own cap
    not_found     404 / NOT_FOUND
    rate_limited  429 / RESOURCE_EXHAUSTED with a retry-after trailer
    unavailable   503 / UNAVAILABLE
    timeout       408, 504 / DEADLINE_EXCEEDED

gRPC folds 400, 413, 415 and 422 into INVALID_ARGUMENT (``service.v2.grpc_calls.GRPC_CODES``, as Triton does), so
the gRPC door tells bad_input from too_large by the HTTP status the server recorded for the call: its access line
on ``vitserve.access``, found by the request id the door sends (``AccessLines``). Anything outside the table (a
500, INTERNAL, UNKNOWN) keeps its own name as its class, so it never matches an expected one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, ClassVar

import grpc
import httpx

from tests.service.test_hostile_inputs import png_header
from tests.service.test_v2_grpc import SERVICE, packed
from tests.service.test_v2_grpc_limits import SEPARATE
from tests.service.test_v2_hostile import image_input, pieces, with_binary
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

OK, BAD_INPUT, TOO_LARGE, NOT_FOUND = "ok", "bad_input", "too_large", "not_found"
RATE_LIMITED, UNAVAILABLE, TIMEOUT = "rate_limited", "unavailable", "timeout"

HTTP_CLASSES = {
    200: OK,
    400: BAD_INPUT,
    415: BAD_INPUT,
    422: BAD_INPUT,
    413: TOO_LARGE,
    404: NOT_FOUND,
    429: RATE_LIMITED,
    503: UNAVAILABLE,
    408: TIMEOUT,
    504: TIMEOUT,
}
GRPC_CLASSES = {
    grpc.StatusCode.OK: OK,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: TIMEOUT,
}

CLASSES = frozenset({OK, BAD_INPUT, TOO_LARGE, NOT_FOUND, RATE_LIMITED, UNAVAILABLE, TIMEOUT})

MODEL = "tiny"
ENTRIES = 100_000  # JSON-form bomb: inputs (v2, gRPC) or images entries (/classify)
BOMB_BYTES = 20_971_000  # binary-form bomb: zeros just under the 20 MiB body cap (and gRPC's message cap)
BOMB_ELEMENTS = BOMB_BYTES // 4  # every element empty: only its 4-byte length prefix
HUGE_SHAPE = [18014398509481985, 3, 224, 224]  # 2**54 + 1 images: np.prod wraps, Python ints do not
MULTIPART_PARTS = 100_000  # /classify's binary-form bomb: empty file parts in one multipart body
BOUNDARY = "parity-boundary-7f3a"


@dataclass(frozen=True)
class Outcome:
    """What one request came back with, normalised across doors (``cls``), with the raw facts for reports."""

    door: str
    cls: str
    status: str  # "413", or the gRPC code's name with the status the server recorded: "INVALID_ARGUMENT (413)"
    message: str  # the error message the client saw ("" when ok)
    retry_after: str | None = None
    body: str = ""  # the response body (HTTP) or details and trailers (gRPC), cut for reports

    def __str__(self) -> str:
        return f"{self.cls} [{self.status}] {self.body[:300]!r}"


class AccessLines(logging.Filter):
    """The server's access lines (``vitserve.access``) by request id: what the server recorded for each call. A
    filter on the logger, which keeps each record and drops it: a flood writes thousands, and a failing test's
    report should show its outcomes, not them."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, logging.LogRecord] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None)
        if isinstance(request_id, str):
            self.by_id[request_id] = record
        return False

    async def status_of(self, request_id: str, wait_s: float = 1.0) -> int | None:
        """The HTTP status the server recorded for ``request_id`` (its line is written as the call ends)."""
        deadline = time.monotonic() + wait_s
        while request_id not in self.by_id and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        record = self.by_id.get(request_id)
        status = getattr(record, "status", None)
        return status if isinstance(status, int) else None


@contextmanager
def access_lines() -> Iterator[AccessLines]:
    lines = AccessLines()
    logger = logging.getLogger("vitserve.access")
    previous = logger.level
    logger.addFilter(lines)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeFilter(lines)
        logger.setLevel(previous)


Send = Callable[[], Awaitable[Outcome]]
_ids = count()


def request_id() -> str:
    return f"parity-{next(_ids)}"


@dataclass
class Door(ABC):
    """One way in. ``infer`` is an ordinary request; the other methods build a hostile request (outside any
    measurement: some are 20 MiB) and return the coroutine function that sends it."""

    name: ClassVar[str]
    client: httpx.AsyncClient
    channel: grpc.aio.Channel
    target: str  # the gRPC listener, host:port
    access: AccessLines
    outcomes: list[Outcome] = field(default_factory=list)  # every outcome this door saw, for the global checks

    @abstractmethod
    async def infer(
        self,
        images: Sequence[bytes],
        *,
        version: str | None = None,
        deadline_us: int | None = None,
        forwarded_for: str | None = None,
    ) -> Outcome:
        """``images`` classified by ``MODEL`` (``version``: a version number, or any text, pins one), with the
        client's own deadline (``deadline_us``, in the door's native form) and an ``x-forwarded-for`` claim."""

    @abstractmethod
    def entries_bomb(self) -> Send:
        """The JSON-form bomb: ``ENTRIES`` inputs or image entries."""

    @abstractmethod
    def elements_bomb(self) -> Send:
        """The binary-form bomb: millions of elements declared (or parts sent) in ~20 MiB."""

    @abstractmethod
    def huge_shape(self) -> Send:
        """One image whose declared size no server could hold."""

    @abstractmethod
    def silent(self, release: asyncio.Event) -> Send:
        """A request whose body (message) never completes until ``release`` is set."""

    def seen(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome


# ----- HTTP -------------------------------------------------------------------------------------------------


def http_outcome(door: str, response: httpx.Response) -> Outcome:
    message = ""
    if response.status_code != 200:
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = response.text
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    status = response.status_code
    return Outcome(
        door=door,
        cls=HTTP_CLASSES.get(status, f"http {status}"),
        status=str(status),
        message=message,
        retry_after=response.headers.get("retry-after"),
        body=response.text[:2000] if status != 200 else "",
    )


@dataclass
class HttpDoor(Door):
    async def post(self, path: str, **kwargs: Any) -> Outcome:
        headers = {"x-request-id": request_id(), **kwargs.pop("headers", {})}
        response = await self.client.post(path, headers=headers, **kwargs)
        return self.seen(http_outcome(self.name, response))

    def _silent(self, path: str, first: bytes, content_type: str, release: asyncio.Event) -> Send:
        declared = str(len(first) + 1024)

        async def trickle() -> AsyncIterator[bytes]:
            yield first
            await release.wait()
            yield b"\0" * 1024

        async def send() -> Outcome:
            headers = {"content-type": content_type, "content-length": declared}
            return await self.post(path, content=trickle(), headers=headers)

        return send


@dataclass
class ClassifyDoor(HttpDoor):
    """``POST /classify``: multipart files, JSON ``{"images": [...]}``, or a raw image body."""

    name: ClassVar[str] = "classify"

    async def infer(
        self,
        images: Sequence[bytes],
        *,
        version: str | None = None,
        deadline_us: int | None = None,
        forwarded_for: str | None = None,
    ) -> Outcome:
        params: dict[str, Any] = {}
        if version is not None:
            params["model"] = f"{MODEL}:{version}"
        if deadline_us is not None:
            params["timeout_s"] = deadline_us / 1e6
        headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
        files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
        return await self.post("/classify", params=params, files=files, headers=headers)

    def entries_bomb(self) -> Send:
        body = json.dumps({"images": [{"image_base64": "eA=="}] * ENTRIES}).encode()
        return lambda: self.post("/classify", content=pieces(body), headers={"content-type": "application/json"})

    def elements_bomb(self) -> Send:
        part = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n\r\n"
        ).encode()
        body = part * MULTIPART_PARTS + f"--{BOUNDARY}--\r\n".encode()
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        return lambda: self.post("/classify", content=pieces(body), headers=headers)

    def huge_shape(self) -> Send:
        body = png_header(100_000, 100_000)  # 10 gigapixels in its header
        return lambda: self.post("/classify", content=body, headers={"content-type": "image/png"})

    def silent(self, release: asyncio.Event) -> Send:
        return self._silent("/classify", b"\x89PNG\r\n\x1a\n", "image/png", release)


@dataclass
class RestDoor(HttpDoor):
    """``POST /v2/models/{name}[/versions/{v}]/infer``: JSON, or the binary tensor data extension."""

    name: ClassVar[str] = "v2-rest"

    async def infer(
        self,
        images: Sequence[bytes],
        *,
        version: str | None = None,
        deadline_us: int | None = None,
        forwarded_for: str | None = None,
    ) -> Outcome:
        path = f"/v2/models/{MODEL}/versions/{version}/infer" if version is not None else f"/v2/models/{MODEL}/infer"
        request: dict[str, Any] = {"inputs": [image_input(*images)]}
        if deadline_us is not None:
            request["parameters"] = {"timeout": deadline_us}  # Triton's, in microseconds
        headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
        return await self.post(path, json=request, headers=headers)

    def entries_bomb(self) -> Send:
        body = json.dumps({"inputs": [image_input(b"x")] * ENTRIES}).encode()
        return lambda: self.post(self.path, content=pieces(body), headers={"content-type": "application/json"})

    def elements_bomb(self) -> Send:
        tensor = {
            "name": "image",
            "datatype": "BYTES",
            "shape": [BOMB_ELEMENTS],
            "parameters": {"binary_data_size": BOMB_BYTES},
        }
        body, headers = with_binary({"inputs": [tensor]}, bytes(BOMB_BYTES))
        return lambda: self.post(self.path, content=pieces(body), headers=headers)

    def huge_shape(self) -> Send:
        tensor = {"name": "pixels", "datatype": "FP32", "shape": HUGE_SHAPE, "data": [0.5] * 3072}
        return lambda: self.post(self.path, json={"inputs": [tensor]})

    def silent(self, release: asyncio.Event) -> Send:
        return self._silent(self.path, b'{"inputs": [', "application/json", release)

    @property
    def path(self) -> str:
        return f"/v2/models/{MODEL}/infer"


# ----- gRPC -------------------------------------------------------------------------------------------------


def infer_call(channel: grpc.aio.Channel, *, stream: bool = False) -> Any:
    """``ModelInfer`` taking serialized messages: the caller serializes (a bomb beforehand, off the measurement;
    the protobuf runtime may be pure Python here, as MindSpore sets it, which takes seconds for 100,000 inputs)."""
    kind = channel.stream_unary if stream else channel.unary_unary
    return kind(SERVICE + "ModelInfer", response_deserializer=pb.ModelInferResponse.FromString)


@dataclass
class GrpcDoor(Door):
    """``ModelInfer`` over a real channel: BYTES raw contents, typed contents, or FP32 pixels."""

    name: ClassVar[str] = "grpc"

    async def call(
        self,
        request: pb.ModelInferRequest | bytes | AsyncIterator[bytes],
        *,
        channel: grpc.aio.Channel | None = None,
        stream: bool = False,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Outcome:
        """``request`` (a message, serialized or not, or an async iterator of serialized ones with ``stream``) and
        its normalised outcome."""
        rid = request_id()
        multicallable = infer_call(channel or self.channel, stream=stream)
        message = request.SerializeToString() if isinstance(request, pb.ModelInferRequest) else request
        try:
            await multicallable(message, metadata=(("x-request-id", rid), *metadata), timeout=30)
        except grpc.aio.AioRpcError as err:
            return self.seen(await self.refused(err, rid))
        return self.seen(Outcome(self.name, OK, "OK", ""))

    async def refused(self, err: grpc.aio.AioRpcError, rid: str) -> Outcome:
        code = err.code()
        trailers = dict(err.trailing_metadata() or ())
        retry_after = trailers.get("retry-after")
        recorded = await self.access.status_of(rid) if code != grpc.StatusCode.DEADLINE_EXCEEDED else None
        cls = GRPC_CLASSES.get(code, code.name.lower())
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            cls = TOO_LARGE if recorded == 413 else BAD_INPUT
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            over_cap = recorded == 413 or "larger than max" in (err.details() or "")
            cls = RATE_LIMITED if retry_after else TOO_LARGE if over_cap else "resource_exhausted"
        shown = {k: v for k, v in trailers.items() if isinstance(v, str)}
        return Outcome(
            door=self.name,
            cls=cls,
            status=f"{code.name} ({recorded})",
            message=err.details() or "",
            retry_after=retry_after if isinstance(retry_after, str) else None,
            body=f"{code.name}: {err.details()!r} trailers={shown}",
        )

    async def infer(
        self,
        images: Sequence[bytes],
        *,
        version: str | None = None,
        deadline_us: int | None = None,
        forwarded_for: str | None = None,
    ) -> Outcome:
        request = pb.ModelInferRequest(model_name=MODEL, model_version=version or "")
        request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
        request.raw_input_contents.append(packed(*images))
        if deadline_us is not None:
            request.parameters["timeout"].int64_param = deadline_us  # Triton's, in microseconds
        if forwarded_for is None:
            return await self.call(request)
        # A claimed address over a new connection (a new source port too): what a spoofing caller would do.
        async with grpc.aio.insecure_channel(self.target, options=SEPARATE) as channel:
            return await self.call(request, channel=channel, metadata=(("x-forwarded-for", forwarded_for),))

    def entries_bomb(self) -> Send:
        request = pb.ModelInferRequest(model_name=MODEL)
        one = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
        one.contents.bytes_contents.append(b"x")
        request.inputs.extend([one] * ENTRIES)
        message = request.SerializeToString()
        return lambda: self.call(message)

    def elements_bomb(self) -> Send:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="image", datatype="BYTES", shape=[BOMB_ELEMENTS])
        request.raw_input_contents.append(bytes(BOMB_BYTES))
        message = request.SerializeToString()
        return lambda: self.call(message)

    def huge_shape(self) -> Send:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="pixels", datatype="FP32", shape=HUGE_SHAPE).contents.fp32_contents.extend([0.5] * 3072)
        return lambda: self.call(request)

    def silent(self, release: asyncio.Event) -> Send:
        async def nothing() -> AsyncIterator[bytes]:
            await release.wait()
            yield pb.ModelInferRequest(model_name=MODEL).SerializeToString()

        return lambda: self.call(nothing(), stream=True)


DOORS: dict[str, type[Door]] = {door.name: door for door in (ClassifyDoor, RestDoor, GrpcDoor)}


# ----- what every outcome must be, whatever the door -------------------------------------------------------

# An absolute path under a file-system root a server has: what ``core.errors.without_paths`` must have cut.
SERVER_PATH = re.compile(r"(?<![\w.:])/(?:tmp|work|home|root|usr|var|etc|srv|opt|proc|dev|mnt|run|data|store)/")


def leaks(outcome: Outcome, *roots: str) -> list[str]:
    """What of the server's file system ``outcome`` shows: absolute paths, or any of ``roots``."""
    text = f"{outcome.message}\n{outcome.body}"
    found = [m.group(0) for m in SERVER_PATH.finditer(text)]
    return found + [root for root in roots if root and root in text]
