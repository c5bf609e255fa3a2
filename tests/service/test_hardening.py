"""Hostile clients, in-process: the admin gate, JSON bodies on the event loop, leaks, fair admission."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import running
from tests.service.fakes import ADMIN_TOKEN, FakeFactory, auth, png
from vitserve.model_store import ModelStore
from vitserve.service.app import create_app
from vitserve.service.core.admission import Admission, client_limit
from vitserve.service.core.errors import Overloaded
from vitserve.service.core.metrics import Metrics
from vitserve.service.http.admin_guard import AdminListener
from vitserve.service.settings import Settings

pytestmark = pytest.mark.anyio

Receive = Callable[[], Awaitable[dict[str, Any]]]


def post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope of a ``POST path`` from 127.0.0.1 with ``headers``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def call_asgi(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, int]:
    """POST ``body`` to ``app`` directly; returns (status, how many times the app called ``receive``)."""
    reads = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(post_scope(path, headers), receive, send)
    return status, reads


async def test_admin_token_is_checked_before_any_body_byte_is_read(make_settings: Any, factory: FakeFactory) -> None:
    app = create_app(make_settings(), engine_factory=factory)
    body = json.dumps({"version": 2}).encode()
    json_type = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for headers in ([], [(b"authorization", b"Bearer wrong-token-0123456789")]):
        status, reads = await call_asgi(app, "/admin/models/tiny/aliases/staging", json_type + headers, body)
        assert (status, reads) == (401, 0)
    off = create_app(make_settings(admin_token=None), engine_factory=factory)
    assert await call_asgi(off, "/admin/models/tiny/aliases/staging", json_type, body) == (404, 0)


async def test_admin_routes_are_hidden_from_the_public_openapi(serve: Any) -> None:
    async with serve() as (client, _):
        schema = (await client.get("/openapi.json")).json()
        still_there = await client.post("/admin/models/tiny:2/load", headers=auth())
    assert schema["paths"] and not [p for p in schema["paths"] if p.startswith("/admin")]
    assert still_there.status_code == 200


async def test_admin_on_its_own_listener_is_refused_on_the_public_one(make_settings: Any, factory: Any) -> None:
    app = create_app(make_settings(admin_port=0), engine_factory=factory)
    async with running(app) as public:
        transport = httpx.ASGITransport(app=AdminListener(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
            on_public = await public.post("/admin/models/tiny:2/load", headers=auth())
            on_admin = await admin.post("/admin/models/tiny:2/load", headers=auth())
            classify = await public.post("/classify", files={"file": png(10)})
    assert on_public.status_code == 404 and on_public.json()["error"]["code"] == "not_found"
    assert on_admin.status_code == 200 and on_admin.json()["loaded"] is True
    assert classify.status_code == 200


def hostile_bodies() -> dict[str, bytes]:
    """Bodies under the 20 MiB cap that used to stall the loop, eat memory or raise RecursionError."""
    many_urls = json.dumps({"images": [{"url": "http://example.com/a.png"}] * 480_000}).encode()
    tiny_entries = json.dumps({"images": [{}] * 150_000}).encode()
    deep = b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_b64 = json.dumps({"image_base64": base64.b64encode(os.urandom(12 * 1024 * 1024)).decode()}).encode()
    return {"many_urls": many_urls, "tiny_entries": tiny_entries, "deep": deep, "huge_b64": huge_b64}


async def test_hostile_json_bodies_are_4xx_and_never_stall_the_loop(serve: Any) -> None:
    bodies = hostile_bodies()
    expected = {"many_urls": 413, "tiny_entries": 413, "deep": 413, "huge_b64": 400}
    lags: list[float] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)

    async def pieces(body: bytes) -> AsyncIterator[bytes]:  # as a server receives it: in pieces
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    async with serve() as (client, _):
        assert (await client.post("/classify", files={"file": png(1)})).status_code == 200  # lazy set-up done
        statuses = {}
        prober = asyncio.create_task(probe())
        await asyncio.sleep(1.0)  # the idle loop's own lag: this machine's scheduling noise, not the app's
        noise = max(lags)
        lags.clear()
        try:
            for name, body in bodies.items():
                r = await client.post("/classify", content=pieces(body), headers={"content-type": "application/json"})
                statuses[name] = (r.status_code, r.json()["error"]["code"])
            health = await client.get("/healthz")
        finally:
            prober.cancel()
    assert {k: s for k, (s, _) in statuses.items()} == expected, statuses
    assert health.status_code == 200
    stall = max(lags) - noise
    assert stall < 0.05, f"event loop stalled {max(lags) * 1e3:.0f} ms ({noise * 1e3:.0f} ms when idle)"


async def test_a_broken_model_lists_as_broken_and_leaks_no_path(serve: Any, store: ModelStore) -> None:
    other = store.root / "other"
    (store.root / "tiny").rename(other)  # a second model: copy tiny's files under another name
    import shutil

    shutil.copytree(other, store.root / "tiny")
    for card_path in other.glob("*/card.json"):
        card = json.loads(card_path.read_text())
        card_path.chmod(0o644)
        card_path.write_text(json.dumps({**card, "name": "other"}))
    async with serve() as (client, _):
        broken = store.root / "other" / "2" / "card.json"
        broken.write_text("{not json")
        listing = await client.get("/models")
        one = await client.get("/models/other")
        unknown = await client.post("/classify?model=nope", files={"file": png(1)})
    assert listing.status_code == 200
    models = {m["name"]: m for m in listing.json()["models"]}
    assert models["tiny"]["error"] is None and len(models["tiny"]["versions"]) == 2
    assert models["other"]["error"].startswith("integrity_error") and models["other"]["versions"] == []
    assert one.status_code == 409
    root = str(store.root)
    for r in (listing, one, unknown):
        assert root not in r.text and str(Path(root).parent) not in r.text, r.text
    assert unknown.status_code == 404 and "models: " in unknown.json()["error"]["message"]


async def test_one_client_cannot_take_the_whole_admission_budget(make_settings: Any, store: ModelStore) -> None:
    settings = make_settings(client_header="x-client", client_share=0.25, queue_size=24, max_images=8)
    app = create_app(settings, engine_factory=FakeFactory(delay_s=0.3))
    files = [("file", png(i)) for i in range(8)]
    async with running(app) as client:
        hog = [
            asyncio.create_task(client.post("/classify", files=files, headers={"x-client": "hog"})) for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        polite = await client.post("/classify", files={"file": png(3)}, headers={"x-client": "polite"})
        hogged = await asyncio.gather(*hog)
    assert polite.status_code == 200
    codes = sorted(r.status_code for r in hogged)
    assert codes[0] == 200 and 503 in codes  # the share (8 of 32) admits one 8-image request at a time
    refused = next(r for r in hogged if r.status_code == 503)
    assert "share" in refused.json()["error"]["message"] and refused.headers["retry-after"] == "1"


def test_admission_budgets() -> None:
    admission = Admission(max_in_flight=10, client_limit=6, max_url_fetches=3, metrics=Metrics())
    with admission.admit("a", 6, 0):
        with pytest.raises(Overloaded, match="share"):
            admission._check("a", 1, 0)
        with admission.admit("b", 3, 3):
            with pytest.raises(Overloaded, match="URL"):
                admission._check("c", 1, 1)
            with pytest.raises(Overloaded, match="in progress"):
                admission._check("c", 2, 0)
    assert admission.in_flight == 0 and admission.urls == 0 and not admission.by_client
    assert client_limit(40, 0.5, 32) == 32 and client_limit(40, 0.5, 8) == 20


def test_settings_for_separate_admin_listener() -> None:
    with pytest.raises(ValueError, match="admin_port and admin_socket"):
        Settings(admin_token=ADMIN_TOKEN, admin_port=9000, admin_socket=Path("/tmp/x.sock"))


async def test_large_images_do_not_take_the_decode_workers_of_small_ones() -> None:
    import io

    import numpy as np
    from PIL import Image

    from tests.tiny import TINY_DATA
    from vitserve.service.inputs.decode_pool import LARGE_PIXELS, DecodePool
    from vitserve.vit.decode import DecodeLimits

    big = io.BytesIO()
    Image.fromarray(np.zeros((3000, 4000), np.uint16)).save(big, format="PNG")  # 12 MP, 16-bit
    assert LARGE_PIXELS < 3000 * 4000
    pool = DecodePool(1, DecodeLimits())
    finished: list[str] = []

    async def prepare(name: str, data: bytes) -> None:
        await pool.prepare(data, TINY_DATA)
        finished.append(name)

    try:
        slow = asyncio.create_task(prepare("big", big.getvalue()))
        await asyncio.sleep(0.01)
        await asyncio.gather(*(prepare(f"small{i}", png(i)) for i in range(3)))
        await slow
    finally:
        pool.close()
    assert finished[-1] == "big", finished


async def test_large_lane_runs_nicer_than_the_other_decode_workers() -> None:
    from vitserve.service.inputs.decode_pool import LARGE_LANE_NICENESS, DecodePool
    from vitserve.vit.decode import DecodeLimits

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    pool = DecodePool(1, DecodeLimits())
    try:
        ordinary = pool._executor.submit(niceness).result()
        large = pool._large.submit(niceness).result()
    finally:
        pool.close()
    assert large == min(19, ordinary + LARGE_LANE_NICENESS) and large > ordinary


async def test_concurrent_bodies_share_one_byte_budget(make_settings: Any, factory: FakeFactory) -> None:
    settings = make_settings(max_body_bytes=64 * 1024, max_bodies_bytes=100 * 1024)
    app = create_app(settings, engine_factory=factory)
    held_open = asyncio.Event()
    release = asyncio.Event()
    half = b"\0" * (30 * 1024)

    async def slow_body() -> dict[str, Any]:  # 60 KiB declared, sent in two halves with a pause between
        if not held_open.is_set():
            held_open.set()
            return {"type": "http.request", "body": half, "more_body": True}
        await release.wait()
        return {"type": "http.request", "body": half, "more_body": False}

    async def post(receive: Receive, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
        answer: dict[str, Any] = {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

        await app(post_scope("/classify", [(b"content-type", b"image/png"), *headers]), receive, send)
        return answer["status"], answer["headers"]

    reads = 0

    def one_chunk(size: int) -> Receive:
        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"\0" * size, "more_body": False}

        return receive

    declared = [(b"content-length", str(60 * 1024).encode())]
    async with running(app):
        first = asyncio.create_task(post(slow_body, declared))
        await held_open.wait()
        # 60 KiB held: another 60 KiB declared body is refused unread; one with no length, when it overflows.
        status, headers = await post(one_chunk(60 * 1024), declared)
        assert (status, reads, headers["retry-after"]) == (503, 0, "1")
        status, _ = await post(one_chunk(50 * 1024), [])
        assert (status, reads) == (503, 1)
        release.set()
        assert (await first)[0] == 400  # the first body was received whole (zeros are not an image)
        status, _ = await post(one_chunk(60 * 1024), declared)  # the budget is free again
        assert status == 400 and reads == 2


def test_body_budget_must_hold_one_body() -> None:
    with pytest.raises(ValueError, match="max_bodies_bytes"):
        Settings(max_body_bytes=2048, max_bodies_bytes=1024)
