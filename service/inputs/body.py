"""The images and fields of a classify request, from whichever body form the client chose.

- ``multipart/form-data``: one or more ``file`` parts, optional ``top_k`` and ``model`` text parts;
- ``application/json``: ``{"url"}``, ``{"image_base64"}`` or ``{"images": [...]}`` (see ``ClassifyJSON``);
- ``image/*`` or ``application/octet-stream``: the body is one image file.
The Content-Type header only picks the parser: image bytes are always sniffed by the decoder.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from vitserve.service.core.client_budgets import client_id
from vitserve.service.core.errors import InvalidField, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from vitserve.service.core.schemas import ClassifyJSON
from vitserve.service.inputs.json_body import (
    check_placements,
    count_nodes,
    cut_long_strings,
    decode_long_base64,
    long_string_index,
)


@dataclass(frozen=True)
class ImageInput:
    """Exactly one of ``data`` (encoded bytes), ``url`` and ``pixels`` (already preprocessed, ``(C, H, W)``
    float32, as the Open Inference Protocol's FP32 input sends them)."""

    data: bytes | None = None
    url: str | None = None
    pixels: np.ndarray | None = None


@dataclass(frozen=True)
class ClassifyInputs:
    images: list[ImageInput]
    top_k: int | None
    model: str | None
    client: str = ""  # who sent it, for the per-client admission share (``client_id``)


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.ASCII)


async def read_inputs(request: Request, *, max_images: int) -> ClassifyInputs:
    """Parse the body; raises ``UnsupportedMediaType``, ``InvalidInput`` or ``InvalidField``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        inputs = await _from_form(request, max_images)
    elif content_type == "application/json" or content_type.endswith("+json"):
        inputs = await json_inputs(await read_body(request), max_images=max_images)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        inputs = ClassifyInputs([ImageInput(data=await request.body())], None, None)
    else:
        shown = content_type or "none"
        raise UnsupportedMediaType(
            f"Content-Type {shown} is not accepted; send multipart/form-data (file fields), "
            "application/json ({url} or {image_base64}) or an image/* body"
        )
    if not inputs.images:
        raise InvalidInput("no image in the request: send at least one 'file' field, 'url' or 'image_base64'")
    if len(inputs.images) > max_images:
        raise PayloadTooLarge(f"{len(inputs.images)} images in one request; the limit is {max_images}")
    return replace(inputs, client=request_client(request))


def request_client(request: Request) -> str:
    """The request's client identity (``client_budgets.client_id``) under the app's ``client_header`` setting."""
    peer = request.client.host if request.client else None
    return client_id(request.headers.raw, peer, request.app.state.settings.client_header)


@contextlib.asynccontextmanager
async def _form(request: Request, max_images: int) -> AsyncIterator[FormData]:
    """The multipart form, parsed no further than one file past ``max_images``: more images is a 413, as on
    every door (Starlette's own refusal is a 400 naming its internal count)."""
    try:
        form = await request.form(max_files=max_images + 1, max_fields=16)
    except HTTPException as err:
        if isinstance(err.detail, str) and err.detail.startswith("Too many files"):
            raise PayloadTooLarge(f"more than {max_images} images in one request; the limit is {max_images}") from None
        raise
    try:
        yield form
    finally:
        await form.close()


async def _from_form(request: Request, max_images: int) -> ClassifyInputs:
    async with _form(request, max_images) as form:
        images: list[ImageInput] = []
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise InvalidField(f"unexpected file field {key!r}: image files go in 'file' fields")
                images.append(ImageInput(data=await value.read()))
            elif key in ("top_k", "model"):
                fields[key] = value
            elif key == "file":
                raise InvalidInput("the 'file' field must be a file upload (curl -F file=@photo.jpg)")
            else:
                raise InvalidField(f"unexpected form field {key!r}; expected file, top_k, model")
    return ClassifyInputs(images, _int_field("top_k", fields.get("top_k")), fields.get("model") or None)


def _int_field(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidField(f"{name}: expected an integer, got {value[:40]!r}") from None


async def read_body(request: Request) -> bytes:
    """The whole body; its pieces are joined on a worker thread (a copy of up to the body cap)."""
    chunks = [chunk async for chunk in request.stream()]
    if len(chunks) == 1:
        return chunks[0]
    return await asyncio.to_thread(b"".join, chunks)


async def json_inputs(body: bytes, *, max_images: int) -> ClassifyInputs:
    """Parse a classify JSON body on a worker thread, in bounded steps (``service.inputs.json_body``): whatever
    the body holds, the event loop keeps running, and a body with more objects, arrays or strings than
    ``max_images`` images can need is refused (413) before any of it becomes Python objects."""
    return await asyncio.to_thread(_from_json, body, max_images)


def json_node_limit(max_images: int) -> int:
    """Objects and arrays a valid classify body can need: the outer object, ``images`` and one object per image,
    with slack for brackets inside strings (an IPv6 URL host); bounds the nesting depth too."""
    return 2 * max_images + 8


def _from_json(body: bytes, max_images: int) -> ClassifyInputs:
    nodes, quotes = count_nodes(body)
    node_limit, quote_limit = json_node_limit(max_images), 8 * max_images + 64
    if nodes > node_limit or quotes > quote_limit:
        raise PayloadTooLarge(
            f"the JSON body holds {nodes} objects and arrays and {quotes} quotes; at most {node_limit} and "
            f"{quote_limit} are accepted ({max_images} images)"
        )
    small, cut = cut_long_strings(body)
    try:
        raw = json.loads(small)
    except RecursionError:  # only when max_images is set very high: the node count bounds the depth
        raise InvalidInput("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInput(f"the body is not valid JSON: {err}") from None
    check_placements(raw, cut)
    try:
        parsed = ClassifyJSON.model_validate(raw)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:5]]
        raise InvalidField("; ".join(parts)) from None
    refs = parsed.refs()
    if len(refs) > max_images:  # before decoding any of them
        raise PayloadTooLarge(f"{len(refs)} images in one request; the limit is {max_images}")
    return ClassifyInputs([_image(ref.url, ref.image_base64, cut) for ref in refs], parsed.top_k, parsed.model)


def _image(url: str | None, text: str | None, cut: list[memoryview]) -> ImageInput:
    if url is not None:
        return ImageInput(url=url)
    index = long_string_index(text)
    return ImageInput(data=decode_long_base64(cut[index]) if index is not None else decode_base64(text or ""))


_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, optionally as a ``data:`` URL, whitespace ignored; strict otherwise.

    Linear-time C calls only (no regular expression over the payload): the payload may be the whole body cap.
    """
    text = text.strip()
    prefix = _DATA_URL.match(text[:512])
    if prefix:
        text = text[prefix.end() :]
    try:
        compact = "".join(text.split()).encode("ascii")
    except UnicodeEncodeError:
        raise InvalidInput("image_base64 is not valid base64") from None
    if not compact:
        raise InvalidInput("image_base64 is not valid base64")
    compact = compact.translate(_URL_SAFE)
    compact += b"=" * (-len(compact) % 4)
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not valid base64") from None
