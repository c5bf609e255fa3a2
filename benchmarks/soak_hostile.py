"""The soak's hostile clients, at every door: bombs and refusals, over-rate senders and forged identities.

Each door gets the forms its protocol allows (``hostile_http`` for ``/classify`` and ``/v2`` REST,
``hostile_grpc`` for gRPC): JSON bombs (huge lists, deep nesting, half a million empty strings or objects),
binary-tensor bombs (megabytes of empty BYTES elements for a shape of one), huge and overflowing shapes, many
inputs, non-ASCII digits where a number belongs (``tiny:²``, a version ``²``, a header length ``²``),
undecodable and refused images (random bytes, a PDF, a 144 MP pixel bomb), the worst allowed image (a 40 MP
16-bit PNG), refused URLs and unauthenticated admin uploads. The hostile clients are one identity over every
door (as one address is, REST and gRPC alike) and ignore Retry-After. Beside them, spread over the doors: an
*over-rate* sender (valid requests at twice the default ``CLIENT_RATE``, whatever the answers), and a *spoofer*
(the same, without the trusted header and with a new ``x-forwarded-for`` on every request: it must count as one
client, its address). Clients that want all the capacity they can get, with valid requests, are
``fairness``'s subject.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import grpc
import httpx
import numpy as np

from vitserve.benchmarks.http_bench import realistic_jpegs
from vitserve.benchmarks.soak_doors import (
    CLIENT_HEADER,
    DOORS,
    HEADER_LENGTH,
    DoorClient,
    Doors,
    grpc_call,
    grpc_outcome,
    infer_request,
    open_door,
    packed,
    v2_body,
)
from vitserve.benchmarks.soak_report import Tally
from vitserve.service.v2.proto import grpc_predict_v2_pb2 as pb

HOSTILE = "hostile"  # the hostile clients' identity
HOSTILE_GROUPS = frozenset({HOSTILE, "over_rate", "spoofer"})
# The over-rate sender's and the spoofer's requests a second, each over the three doors: twice the default
# CLIENT_RATE. Small JPEGs (the model's own size): what they cost is the requests, which the rate is about.
PACED_PER_S = 100.0
PACED_IN_FLIGHT = 16  # requests out at once, per door, beyond which a send is skipped
SMALL_JPEG = (64, 64)
BINARY_BOMB_BYTES = 4 << 20  # of empty BYTES elements, for a shape of one element
MANY = 25_000  # inputs, empty strings or objects in a "many" bomb (~2 MB of JSON, as the /classify list)

HttpRequest = tuple[str, str, dict[str, Any]]  # (kind, path, httpx request arguments)


def bad_images() -> dict[str, bytes]:
    """Undecodable, refused and the most expensive allowed images, built once."""
    from PIL import Image

    wide = io.BytesIO()
    Image.fromarray(np.zeros((5000, 8000), np.uint16)).save(wide, format="PNG")  # 40 MP, 16-bit: the worst allowed
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, format="PNG")  # 144 MP: refused from its header
    return {
        "garbage_image": os.urandom(4096),
        "pdf": b"%PDF-1.4\n" + os.urandom(512),
        "pixel_bomb": bomb.getvalue(),
        "wide_16bit_40mp": wide.getvalue(),
    }


def classify_requests(model: str, images: dict[str, bytes], jpeg: bytes) -> list[HttpRequest]:
    as_json = {"content-type": "application/json"}
    bodies: list[tuple[str, Any, dict[str, str]]] = [
        ("json_many_entries", json.dumps({"images": [{"url": "http://x/a"}] * 100_000}), as_json),
        ("json_deep", b'{"images":' + b"[" * 50_000 + b"]" * 50_000 + b"}", as_json),
        ("json_bad", b'{"image_base64": "%%%"}', as_json),
        ("url_refused", json.dumps({"url": "http://127.0.0.1:1/x.png"}), as_json),
        ("url_siit", json.dumps({"url": "http://[::ffff:0:7f00:1]/x.png"}), as_json),
    ]
    bodies += [(kind, data, {"content-type": "image/png"}) for kind, data in images.items()]
    requests = [(kind, "/classify", {"content": body, "headers": headers}) for kind, body, headers in bodies]
    unicode = {"content": jpeg, "headers": {"content-type": "image/jpeg"}, "params": {"model": f"{model}:²"}}
    return [*requests, ("unicode_model", "/classify", unicode)]


def image_tensor(*elements: bytes) -> dict[str, Any]:
    """An ``image`` BYTES ``[N]`` input whose elements come as binary data."""
    size = len(packed(*elements))
    return {"name": "image", "datatype": "BYTES", "shape": [len(elements)], "parameters": {"binary_data_size": size}}


def json_input(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def v2_bombs() -> list[tuple[str, tuple[bytes, dict[str, Any]]]]:
    """(kind, (body, headers)): the ``/v2`` JSON and binary-tensor bombs and the huge shapes."""
    as_json = {"content-type": "application/json"}
    deep = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":' + b"[" * 50_000 + b"]" * 50_000
    outputs = b'{"inputs":[],"outputs":[' + b"{}," * MANY * 20 + b"{}]}"
    bomb = {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": BINARY_BOMB_BYTES}}
    return [
        ("json_many_inputs", v2_body({"inputs": [json_input("image", "BYTES", [1], ["eA=="])] * MANY})),
        ("json_empty_strings", v2_body({"inputs": [json_input("image", "BYTES", [MANY * 20], [""] * MANY * 20)]})),
        ("json_deep", (deep + b"}]}", as_json)),
        ("json_empty_outputs", (outputs, as_json)),
        ("binary_bomb", v2_body({"inputs": [bomb]}, b"\0" * BINARY_BOMB_BYTES)),
        ("huge_shape", v2_body({"inputs": [json_input("image", "BYTES", [2**32, 2**32], ["eA=="])]})),
        ("huge_pixel_shape", v2_body({"inputs": [json_input("pixels", "FP32", [1, 3, 2**62, 2**62], [0.5] * 3072)]})),
    ]


def v2_requests(model: str, images: dict[str, bytes]) -> list[HttpRequest]:
    infer = f"/v2/models/{model}/infer"
    body, headers = v2_body({"inputs": [image_tensor(b"x")]}, packed(b"x"))
    cases = [(kind, infer, request) for kind, request in v2_bombs()]
    cases += [
        ("unicode_version", f"/v2/models/{model}/versions/²/infer", (body, headers)),
        ("unicode_model", f"/v2/models/{model}:²/infer", (body, headers)),
        ("unicode_header_length", infer, (body, {**headers, HEADER_LENGTH: "²".encode("latin-1")})),
    ]
    cases += [(kind, infer, v2_body({"inputs": [image_tensor(data)]}, packed(data))) for kind, data in images.items()]
    return [(kind, path, {"content": body, "headers": headers}) for kind, path, (body, headers) in cases]


def grpc_requests(model: str, images: dict[str, bytes]) -> list[tuple[str, pb.ModelInferRequest]]:
    def shaped(shape: list[int], name: str = "image", datatype: str = "BYTES") -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        return request

    many = pb.ModelInferRequest(model_name=model)
    for _ in range(MANY):
        many.inputs.add(name="image", datatype="BYTES", shape=[1])
    bomb = shaped([1])
    bomb.raw_input_contents.append(b"\0" * BINARY_BOMB_BYTES)
    empty_elements = shaped([1])
    empty_elements.inputs[0].contents.bytes_contents.extend([b""] * MANY * 20)
    huge = shaped([2**32, 2**32])
    huge.raw_input_contents.append(packed(b"x"))
    huge_pixels = shaped([1, 3, 2**62, 2**62], "pixels", "FP32")
    huge_pixels.raw_input_contents.append(b"\0" * 12288)
    unicode_version = infer_request(model, b"x", top_k=None)
    unicode_version.model_version = "²"
    unicode_model = infer_request(f"{model}:٣", b"x", top_k=None)
    requests = [
        ("many_inputs", many),
        ("binary_bomb", bomb),
        ("empty_elements", empty_elements),
        ("huge_shape", huge),
        ("huge_pixel_shape", huge_pixels),
        ("unicode_version", unicode_version),
        ("unicode_model", unicode_model),
    ]
    return requests + [(kind, infer_request(model, data, top_k=None)) for kind, data in images.items()]


async def hostile_http(
    doors: Doors, door: str, requests: Sequence[HttpRequest], until: float, tally: Tally, admin_every: int = 0
) -> None:
    """Cycles through ``requests`` back to back; every ``admin_every``-th time, an unauthenticated 1 MiB upload."""
    async with httpx.AsyncClient(base_url=doors.url, timeout=30) as client:
        i = 0
        while time.monotonic() < until:
            kind, path, kwargs = requests[i % len(requests)]
            headers = {CLIENT_HEADER: HOSTILE, **kwargs.get("headers", {})}
            try:
                r = await client.post(path, **{**kwargs, "headers": headers})
                tally.count(door, kind, str(r.status_code))
            except httpx.HTTPError as err:
                tally.count(door, kind, type(err).__name__)
            if admin_every and i % admin_every == 0:
                r = await client.post("/admin/models/x/versions", content=b"\0" * (1 << 20))
                tally.count("admin", "admin_no_token", str(r.status_code))
            i += 1


async def hostile_grpc(
    doors: Doors, requests: Sequence[tuple[str, pb.ModelInferRequest]], until: float, tally: Tally
) -> None:
    async with doors.channel() as channel:
        infer = grpc_call(channel, "ModelInfer", pb.ModelInferResponse)
        i = 0
        while time.monotonic() < until:
            kind, request = requests[i % len(requests)]
            try:
                await infer(request, metadata=((CLIENT_HEADER, HOSTILE),), timeout=30)
                tally.count("grpc", kind, "OK")
            except grpc.aio.AioRpcError as err:
                tally.count("grpc", kind, grpc_outcome(err))
            i += 1


async def paced(doors: Doors, door: str, kind: str, jpegs: Sequence[bytes], until: float, tally: Tally) -> None:
    """``PACED_PER_S`` ÷ 3 small JPEGs a second at ``door``, whatever the answers (ignoring Retry-After; a send
    that finds ``PACED_IN_FLIGHT`` requests out is skipped); ``over_rate`` under its own identity, ``spoofer``
    with none (its address counts) and a new ``x-forwarded-for`` each time."""
    interval_s = len(DOORS) / PACED_PER_S
    in_flight: set[asyncio.Task[None]] = set()

    async def one(client: DoorClient, jpeg: bytes) -> None:
        tally.count(door, kind, (await client.send(jpeg))[0])

    async with open_door(doors, door, None if kind == "spoofer" else kind) as client:
        next_at, i = time.monotonic(), 0
        while time.monotonic() < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval_s, time.monotonic() - 0.1)  # behind by more: those sends are lost
            if len(in_flight) >= PACED_IN_FLIGHT:
                tally.count(door, kind, "skipped")
                continue
            task = asyncio.create_task(one(client, jpegs[i % len(jpegs)]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            i += 1
        await asyncio.gather(*in_flight)


def hostile_clients(
    doors: Doors, jpegs: Sequence[bytes], until: float, tally: Tally, without: frozenset[str] = frozenset()
) -> list[Any]:
    """Every door's hostile client, over-rate sender and spoofer (coroutines to gather), but for the groups in
    ``without`` (``HOSTILE_GROUPS``); ``jpegs``: good ones."""
    clients = []
    if HOSTILE not in without:
        images = bad_images()
        clients += [
            hostile_http(doors, "classify", classify_requests(doors.model, images, jpegs[0]), until, tally, 5),
            hostile_http(doors, "v2", v2_requests(doors.model, images), until, tally),
            hostile_grpc(doors, grpc_requests(doors.model, images), until, tally),
        ]
    small = realistic_jpegs(size=SMALL_JPEG, quality=85)
    for kind in sorted({"over_rate", "spoofer"} - without):
        clients += [paced(doors, door, kind, small, until, tally) for door in DOORS]
    return clients
