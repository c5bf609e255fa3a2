"""The images and fields of a classify request, from whichever body form the client chose.

- ``multipart/form-data``: one or more ``file`` parts, optional ``top_k`` and ``model`` text parts;
- ``application/json``: ``{"url"}``, ``{"image_base64"}`` or ``{"images": [...]}`` (see ``ClassifyJSON``);
- ``image/*`` or ``application/octet-stream``: the body is one image file.
The Content-Type header only picks the parser: image bytes are always sniffed by the decoder.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from vitserve.service.http.errors import InvalidField, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from vitserve.service.http.schemas import ClassifyJSON


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


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.ASCII)
_BASE64_CHARS = re.compile(rb"^[A-Za-z0-9+/_-]*={0,2}$")


async def read_inputs(request: Request, *, max_images: int) -> ClassifyInputs:
    """Parse the body; raises ``UnsupportedMediaType``, ``InvalidInput`` or ``InvalidField``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        inputs = await _from_form(request, max_images)
    elif content_type == "application/json" or content_type.endswith("+json"):
        inputs = _from_json(await request.body())
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
    return inputs


async def _from_form(request: Request, max_images: int) -> ClassifyInputs:
    async with request.form(max_files=max_images + 1, max_fields=16) as form:
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


def _from_json(body: bytes) -> ClassifyInputs:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInput(f"the body is not valid JSON: {err}") from None
    try:
        parsed = ClassifyJSON.model_validate(raw)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()]
        raise InvalidField("; ".join(parts)) from None
    images = [
        ImageInput(url=ref.url) if ref.url is not None else ImageInput(data=decode_base64(ref.image_base64 or ""))
        for ref in parsed.refs()
    ]
    return ClassifyInputs(images, parsed.top_k, parsed.model)


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, optionally as a ``data:`` URL, whitespace ignored; strict otherwise."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    compact = re.sub(r"\s+", "", text).encode("ascii", errors="replace")
    if not compact or not _BASE64_CHARS.match(compact):
        raise InvalidInput("image_base64 is not valid base64")
    compact += b"=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not valid base64") from None
