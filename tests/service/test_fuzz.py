"""Property-based fuzzing (hypothesis): whatever a client sends, the answer is a 2xx or a documented 4xx with
the JSON error shape, never a 5xx; whatever bytes arrive as an image, decoding gives an RGB image within the
pixel cap or one of the typed image errors. Example counts stay small: this runs in CI on every change."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.service.fakes import FakeFactory, png
from vitserve.service.app import create_app
from vitserve.service.settings import Settings
from vitserve.vit.decode import DecodeLimits, decode_image
from vitserve.vit.image_errors import ImageError

# The statuses ERROR_RESPONSES documents for /classify, plus 405 for a wrong method.
DOCUMENTED_4XX = {400, 404, 405, 408, 413, 415, 422}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["url", "image_base64", "images", "top_k", "model", "extra"])
_image_ref = st.fixed_dictionaries(
    {},
    optional={
        "url": st.sampled_from(["http://127.0.0.1:1/x.png", "ftp://x", "http://[::ffff:0:7f00:1]/", "nonsense", ""]),
        "image_base64": st.one_of(
            st.just(base64.b64encode(png(7)).decode()), st.text(max_size=40), st.just("data:image/png;base64,")
        ),
    },
)
_classify_json = st.one_of(
    _json,
    st.dictionaries(_keys, _json, max_size=4),
    st.fixed_dictionaries({"images": st.lists(_image_ref, max_size=40)}, optional={"top_k": _json, "model": _json}),
)


@pytest.fixture(scope="module")
def fuzz_client(tiny_store_template: Any) -> Iterator[TestClient]:
    settings_ = Settings(
        store_root=tiny_store_template,
        default_model="tiny",
        admin_token="fuzz-admin-token-0123456789",
        request_timeout_s=5,
        url_connect_timeout_s=0.2,
        url_timeout_s=0.5,
    )
    with TestClient(create_app(settings_, engine_factory=FakeFactory()), raise_server_exceptions=False) as client:
        yield client


def assert_documented(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.status_code in DOCUMENTED_4XX, response.text
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


@FUZZ
@given(body=_classify_json)
def test_classify_json_is_never_a_5xx(fuzz_client: TestClient, body: Any) -> None:
    assert_documented(fuzz_client.post("/classify", content=json.dumps(body)))


@FUZZ
@given(
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(
        [
            "application/json",
            "image/png",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "text/plain",
            "",
        ]
    ),
    query=st.sampled_from(["", "?top_k=0", "?top_k=abc", "?model=..%2F", "?timeout_s=-1", "?model=tiny:999"]),
)
def test_raw_bodies_are_never_a_5xx(fuzz_client: TestClient, body: bytes, content_type: str, query: str) -> None:
    assert_documented(fuzz_client.post(f"/classify{query}", content=body, headers={"content-type": content_type}))


def _png_header(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


def _mutated(seed: Callable[[], bytes]) -> st.SearchStrategy[bytes]:
    def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for pos, value in edits:
            out[pos % len(out)] = value
        return bytes(out)

    return st.builds(
        mutate, st.just(seed()), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)
    )


def _encoded(fmt: str, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (33, 21), 90).save(buf, format=fmt)
    return buf.getvalue()


LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=1_000_000)
_image_bytes = st.one_of(
    st.binary(max_size=512),
    st.builds(
        _png_header,
        st.integers(0, 1 << 20),
        st.integers(0, 1 << 20),
        st.sampled_from([1, 2, 4, 8, 16]),
        st.sampled_from([0, 2, 3, 4, 6]),
    ),
    _mutated(lambda: _encoded("PNG", "RGBA")),
    _mutated(lambda: _encoded("JPEG", "RGB")),
    _mutated(lambda: _encoded("GIF", "P")),
    _mutated(lambda: _encoded("TIFF", "I;16")),
    _mutated(lambda: _encoded("BMP", "RGB")),
    _mutated(lambda: _encoded("WEBP", "RGBA")),
)


@settings(max_examples=150, deadline=None)
@given(data=_image_bytes)
def test_decoding_gives_rgb_within_the_cap_or_a_typed_error(data: bytes) -> None:
    try:
        image = decode_image(data, limits=LIMITS, target_size=32)
    except ImageError:
        return
    assert image.mode == "RGB" and image.width * image.height <= LIMITS.max_pixels
