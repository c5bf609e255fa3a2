"""The soak's slow clients: connections that hold the server's resources while sending as little as they can.

HTTP (``/classify`` and ``/v2`` alike): request headers never finished, a body trickled 4 bytes at a time, a
connection that says nothing. gRPC: a connection that never starts HTTP/2 (the client preface), one whose
preface is trickled a byte at a time, a call whose message is trickled 4 bytes per HTTP/2 DATA frame (the frames
written by hand: a client that never finishes needs no HTTP/2 library), and a call whose message never comes.
Each is reopened as soon as the server closes or answers it, until the soak ends; the outcome is the HTTP status
the server answered, ``closed``, ``reset``, ``held_to_end``, or for raw HTTP/2 ``answered`` (the call ended
with a status), ``rst_stream`` or ``goaway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import grpc

from vitserve.benchmarks.soak_doors import CLIENT_HEADER, GRPC_SERVICE, Doors, grpc_infer_stream, grpc_outcome
from vitserve.benchmarks.soak_report import Tally
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

SLOW = "slow"  # the slow clients' identity
DRIP_S = 0.5  # between two drips, and the longest wait for the server's answer after each
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1

Answer = Callable[[bytes], str | None]  # what the server sent so far → the outcome, or None while it has not answered


def http_head(path: str, length: int = 100_000) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{CLIENT_HEADER}: {SLOW}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def drip(
    host: str, port: int, opening: bytes, drops: Iterator[bytes], until: float, answer_of: Answer, ack: bool = False
) -> str:
    """Send ``opening``, then the next of ``drops`` every ``DRIP_S`` until the server answers (``answer_of`` names
    it from what came back, or None while it has not), closes or resets, or the soak ends. ``ack``: acknowledge
    the server's HTTP/2 SETTINGS, as any HTTP/2 client must."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "refused"
    try:
        writer.write(opening)
        received = b""
        while time.monotonic() < until:
            writer.write(next(drops, b""))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(reader.read(4096), DRIP_S)
                if not chunk:
                    return answer_of(received) or "closed"
                if ack and settings_frames(received + chunk) > settings_frames(received):
                    writer.write(frame(SETTINGS, ACK, 0))
                received += chunk
                if (answer := answer_of(received)) is not None:
                    return answer
        return "held_to_end"
    except OSError:
        return "reset"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def http_status(received: bytes) -> str | None:
    """The status of a complete HTTP response head, else None."""
    if not received.startswith(b"HTTP/") or b"\r\n\r\n" not in received:
        return None
    return received.split(b" ", 2)[1].decode()


def never(received: bytes) -> str | None:
    """Nothing the server sends answers the client: wait for it to close the connection."""
    return None


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (names and values under 127 bytes)."""
    return b"\0" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def grpc_call_opening(path: str) -> bytes:
    """Preface, empty SETTINGS and the HEADERS of a ``ModelInfer`` call on stream 1."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1")]
    fields += [("content-type", "application/grpc"), ("te", "trailers"), (CLIENT_HEADER, SLOW)]
    block = b"".join(literal(name, value) for name, value in fields)
    return PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, block)


def frames(received: bytes) -> Iterator[tuple[int, int]]:
    """(type, flags) of each HTTP/2 frame whose header has arrived."""
    at = 0
    while at + 9 <= len(received):
        yield received[at + 3], received[at + 4]
        at += 9 + int.from_bytes(received[at : at + 3], "big")


def settings_frames(received: bytes) -> int:
    """The server's SETTINGS frames that ask to be acknowledged."""
    return sum(kind == SETTINGS and not flags & ACK for kind, flags in frames(received))


def h2_outcome(received: bytes) -> str | None:
    """``answered`` once the call ended (HEADERS with END_STREAM), ``rst_stream`` or ``goaway``."""
    for kind, flags in frames(received):
        if kind == HEADERS and flags & END_STREAM:
            return "answered"
        if kind in (RST_STREAM, GOAWAY):
            return "rst_stream" if kind == RST_STREAM else "goaway"
    return None


async def trickled_message(host: str, port: int, model: str, until: float) -> str:
    """A ``ModelInfer`` call whose (good) message is sent 4 bytes per DATA frame; the server's SETTINGS are not
    acknowledged."""
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    message.raw_input_contents.append(b"\0" * 4096)
    body = b"\0" + struct.pack(">I", message.ByteSize()) + message.SerializeToString()
    drops = (frame(DATA, 0, 1, body[i : i + 4]) for i in range(0, len(body), 4))
    return await drip(host, port, grpc_call_opening(GRPC_SERVICE + "ModelInfer"), drops, until, h2_outcome, ack=True)


async def never_sent(doors: Doors, until: float) -> str:
    """A ``ModelInfer`` call whose message never comes: the server's receive deadline must end it."""
    ended = asyncio.Event()

    async def nothing() -> AsyncIterator[pb.ModelInferRequest]:
        await ended.wait()  # then the stream ends, without a message
        return
        yield

    async with doors.channel() as channel:
        call = grpc_infer_stream(channel)(
            nothing(), metadata=((CLIENT_HEADER, SLOW),), timeout=until - time.monotonic()
        )
        try:
            await call
        except grpc.aio.AioRpcError as err:
            return grpc_outcome(err)
        finally:
            ended.set()  # lets gRPC's task that reads the stream finish before the channel closes
            await asyncio.sleep(0.01)
    return "OK"


def slow_clients(doors: Doors, until: float, tally: Tally) -> list[Awaitable[None]]:
    """Every slow client (coroutines to gather), each reopened until ``until``."""
    host, port, grpc_port, v2 = "127.0.0.1", doors.port, doors.grpc_port, f"/v2/models/{doors.model}/infer"

    def http(opening: bytes, drop: bytes) -> Callable[[], Awaitable[str]]:
        return lambda: drip(host, port, opening, itertools.repeat(drop), until, http_status)

    kinds: dict[tuple[str, str], Callable[[], Awaitable[str]]] = {
        ("classify", "slow_headers"): http(b"POST /classify HTTP/1.1\r\nHost: x\r\n", b"X"),
        ("classify", "slow_body"): http(http_head("/classify"), b"abcd"),
        ("v2", "slow_headers"): http(f"POST {v2} HTTP/1.1\r\nHost: x\r\n".encode(), b"X"),
        ("v2", "slow_body"): http(http_head(v2), b"abcd"),
        ("http", "slow_silent"): http(b"", b""),
        ("grpc", "slow_silent"): lambda: drip(host, grpc_port, b"", itertools.repeat(b""), until, never),
        ("grpc", "slow_preface"): lambda: drip(host, grpc_port, b"", (bytes([b]) for b in PREFACE), until, never),
        ("grpc", "slow_message"): lambda: trickled_message(host, grpc_port, doors.model, until),
        ("grpc", "message_never_sent"): lambda: never_sent(doors, until),
    }

    async def again(door: str, kind: str, connect: Callable[[], Awaitable[str]]) -> None:
        while time.monotonic() < until:
            tally.count(door, kind, await connect())

    return [again(door, kind, connect) for (door, kind), connect in kinds.items()]
