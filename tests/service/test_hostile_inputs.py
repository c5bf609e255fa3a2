"""Hostile and malformed inputs get the documented 4xx, never a 500, and the server keeps answering."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.service.fakes import png

pytestmark = pytest.mark.anyio


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width × height, with a tiny (invalid) IDAT: only the header is real."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    out = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 16)
    return out + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG whose SOF0 claims width × height (then ends)."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}, body
    return response.status_code, body["error"]["code"]


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> dict[str, Any]:
    return {"files": {"file": (name, data, content_type)}}


HOSTILE_UPLOADS = {
    "truncated jpeg": (jpeg()[: len(jpeg()) // 2], (400, "invalid_image")),
    "zero bytes": (b"", (400, "invalid_image")),
    "text renamed .jpg": (b"hello, I am not a picture\n" * 10, (400, "invalid_image")),
    "html renamed .jpg": (b"<!doctype html><html><body>hi</body></html>", (400, "invalid_image")),
    "100000x100000 png header": (png_header(100_000, 100_000), (413, "image_too_large")),
    "65000x65000 jpeg header": (jpeg_header(65_000, 65_000), (413, "image_too_large")),
    "pdf": (b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF", (415, "unsupported_media_type")),
    "svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', (415, "unsupported_media_type")),
}


@pytest.mark.parametrize("case", list(HOSTILE_UPLOADS))
async def test_hostile_upload(serve: Any, case: str) -> None:
    data, expected = HOSTILE_UPLOADS[case]
    async with serve() as (client, _):
        response = await client.post("/classify", **upload(data))
        as_base64 = await client.post("/classify", json={"image_base64": base64.b64encode(data).decode()})
        still = await client.post("/classify", **upload(jpeg()))
    assert error_of(response) == expected
    if data:  # an empty base64 string is refused earlier, as bad base64
        assert error_of(as_base64) == expected
    assert still.status_code == 200


async def test_request_shape_errors(serve: Any) -> None:
    good = base64.b64encode(png(3)).decode()
    async with serve(max_images=3) as (client, _):
        cases = {
            "plain text body": (await client.post("/classify", content=b"hi", headers={"Content-Type": "text/plain"})),
            "no content type": (await client.post("/classify", content=b"hi", headers={"Content-Type": ""})),
            "xml": (await client.post("/classify", content=b"<a/>", headers={"Content-Type": "application/xml"})),
            "bad base64": (await client.post("/classify", json={"image_base64": "%%%not base64%%%"})),
            "truncated base64": (await client.post("/classify", json={"image_base64": "iVBORw0KGgoAAAANS"})),
            "base64 of a truncated png": (
                await client.post("/classify", json={"image_base64": base64.b64encode(png(3)[:40]).decode()})
            ),
            "urlencoded form": (await client.post("/classify", data={"file": "abc"})),
            "broken json": (
                await client.post("/classify", content=b'{"url": ', headers={"Content-Type": "application/json"})
            ),
            "json not an object": (await client.post("/classify", json=[1, 2])),
            "both url and base64": (await client.post("/classify", json={"url": "http://x", "image_base64": good})),
            "unknown json field": (await client.post("/classify", json={"image_base64": good, "topk": 2})),
            "empty images": (await client.post("/classify", json={"images": []})),
            "form field instead of file": (await client.post("/classify", files={"file": (None, b"abc")})),
            "no file at all": (await client.post("/classify", files={"top_k": (None, b"1")})),
            "unknown form field": (await client.post("/classify", files={"file": png(1), "topk": (None, b"1")})),
            "too many files": (await client.post("/classify", files=[("file", png(1))] * 4)),
        }
        still = await client.post("/classify", files={"file": png(1)})
    expected = {
        "plain text body": (415, "unsupported_media_type"),
        "no content type": (415, "unsupported_media_type"),
        "xml": (415, "unsupported_media_type"),
        "bad base64": (400, "invalid_input"),
        "truncated base64": (400, "invalid_input"),  # 17 characters: not base64
        "base64 of a truncated png": (400, "invalid_image"),
        "urlencoded form": (415, "unsupported_media_type"),
        "broken json": (400, "invalid_input"),
        "json not an object": (422, "invalid_request"),
        "both url and base64": (422, "invalid_request"),
        "unknown json field": (422, "invalid_request"),
        "empty images": (400, "invalid_input"),
        "form field instead of file": (400, "invalid_input"),
        "no file at all": (400, "invalid_input"),
        "unknown form field": (422, "invalid_request"),
        "too many files": (413, "payload_too_large"),
    }
    assert {k: error_of(r) for k, r in cases.items()} == expected
    assert still.status_code == 200


async def test_huge_bodies_are_refused_declared_or_streamed(serve: Any) -> None:
    cap = 64 * 1024
    big = b"\xff\xd8\xff" + b"\x00" * (cap * 2)

    async def chunks() -> Any:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with serve(max_body_bytes=cap) as (client, _):
        declared = await client.post("/classify", **upload(big))
        streamed = await client.post("/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
        as_json = await client.post("/classify", json={"image_base64": base64.b64encode(big).decode()})
        still = await client.post("/classify", **upload(jpeg()))
    assert error_of(declared) == (413, "payload_too_large")
    assert error_of(streamed) == (413, "payload_too_large")
    assert error_of(as_json) == (413, "payload_too_large")
    assert still.status_code == 200


async def test_pixel_cap_is_configurable(serve: Any) -> None:
    async with serve(max_image_pixels=1000) as (client, _):
        response = await client.post("/classify", files={"file": png(1, size=(40, 36))})
    assert error_of(response) == (413, "image_too_large")
