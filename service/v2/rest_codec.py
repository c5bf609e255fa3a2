"""REST bodies ↔ protocol requests and responses: JSON, and the binary tensor data extension.

Binary tensor data: the ``Inference-Header-Content-Length`` header gives the length of the JSON that starts
the body; the bytes after it are the inputs that carry ``binary_data_size``, in input order, each in the raw
form (FP32: little-endian floats; BYTES: each element prefixed by its uint32 little-endian length). Outputs
come back the same way when asked (``binary_data`` on an output, else ``binary_data_output`` on the request).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import numpy as np

from vitserve.service.core.errors import InvalidInput
from vitserve.service.v2.protocol import InferRequest, InferResponse
from vitserve.service.v2.rest_header import Header, bytes_elements, fp32_values, parse_header
from vitserve.service.v2.schemas import Parameters, RequestInput
from vitserve.service.v2.tensors import (
    BYTES,
    InputTensor,
    OutputRequest,
    check_declared,
    expect_one_input,
    fp32_from_raw,
    raw_of,
    unpack_bytes,
)

HEADER_LENGTH = "Inference-Header-Content-Length"

_DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII only: "²".isdigit() is true and int("²") raises
_MAX_TIMEOUT_US = 10**12  # longer than any server timeout: a longer one changes nothing (and may not fit a float)

T = TypeVar("T", int, bool)


def decode_body(
    body: bytes, header_length: str | None, *, model: str, version: str | None, fallback_id: str | None, max_images: int
) -> tuple[InferRequest, bool]:
    """``split_body`` then ``decode_request``: the whole decoding, in bounded steps, for a worker thread."""
    header, binary = split_body(body, header_length)
    return decode_request(header, binary, model=model, version=version, fallback_id=fallback_id, max_images=max_images)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(the JSON part, the binary part) of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    if not _DIGITS.fullmatch(header_length) or int(header_length) > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {header_length[:40]!r}; the body has {len(body)} bytes")
    size = int(header_length)
    return body[:size], memoryview(body)[size:]


def decode_request(
    header: bytes, binary: memoryview, *, model: str, version: str | None, fallback_id: str | None, max_images: int
) -> tuple[InferRequest, bool]:
    """The request and whether its outputs default to binary data. ``fallback_id`` (the X-Request-Id header)
    names the request when its body gives no ``id``. Each input's declared shape is checked against
    ``max_images`` before its data is decoded."""
    parsed = parse_header(header, max_images=max_images)
    body = parsed.body
    expect_one_input([item.name for item in body.inputs])
    outputs = None
    if body.outputs is not None:
        outputs = [
            OutputRequest(
                o.name,
                classification=_param(o.parameters, "classification", int),
                binary=_param(o.parameters, "binary_data", bool),
            )
            for o in body.outputs
        ]
    timeout_us = _param(body.parameters, "timeout", int)
    request = InferRequest(
        model=model,
        version=version,
        inputs=_inputs(parsed, binary, max_images),
        outputs=outputs,
        id=body.id if body.id is not None else fallback_id,
        timeout_s=min(timeout_us, _MAX_TIMEOUT_US) / 1e6 if timeout_us is not None and timeout_us > 0 else None,
    )
    return request, bool(_param(body.parameters, "binary_data_output", bool))


def _inputs(parsed: Header, binary: memoryview, max_images: int) -> list[InputTensor]:
    inputs, at = [], 0
    for item in parsed.body.inputs:
        count = check_declared(item.name, item.datatype, item.shape, max_images=max_images)
        size = _param(item.parameters, "binary_data_size", int)
        if size is None:
            inputs.append(_json_input(item, parsed, count))
            continue
        if item.data is not None:
            raise InvalidInput(f"input {item.name!r} has both data and binary_data_size")
        if size < 0 or at + size > len(binary):
            raise InvalidInput(f"input {item.name!r}: binary_data_size {size} runs past the body's binary part")
        inputs.append(_binary_input(item, binary[at : at + size], count))
        at += size
    if at != len(binary):
        raise InvalidInput(f"{len(binary) - at} bytes of binary data that no input claims")
    return inputs


def _param(parameters: Parameters | None, key: str, kind: type[T]) -> T | None:
    if not parameters or parameters.get(key) is None:
        return None
    value = parameters[key]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise InvalidInput(f"parameter {key!r} must be {kind.__name__}, got {str(value)[:40]!r}")
    return value


def _binary_input(item: RequestInput, raw: memoryview, count: int) -> InputTensor:
    """The input's raw bytes, read no further than its declared ``count`` of elements."""
    what = f"input {item.name!r}"
    if item.datatype == BYTES:
        return InputTensor(item.name, BYTES, tuple(item.shape), unpack_bytes(raw, what, count=count))
    if len(raw) != 4 * count:
        raise InvalidInput(f"{what}: shape {item.shape} holds {count} FP32 values ({4 * count} bytes), got {len(raw)}")
    return InputTensor(item.name, item.datatype, tuple(item.shape), fp32_from_raw(raw, what))


def _json_input(item: RequestInput, parsed: Header, count: int) -> InputTensor:
    what = f"input {item.name!r}"
    if item.data is None:
        raise InvalidInput(f"{what} has neither data nor binary_data_size")
    if item.datatype == BYTES:
        return InputTensor(item.name, BYTES, tuple(item.shape), bytes_elements(item.data, parsed, count, what))
    values = fp32_values(item.data, parsed, item.shape, count, what)
    return InputTensor(item.name, item.datatype, tuple(item.shape), values)


def encode_response(response: InferResponse, *, binary_default: bool) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (Content-Type, and the JSON's length when binary data follows)."""
    outputs, blobs = [], []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.binary if output.binary is not None else binary_default:
            raw = raw_of(output)
            blobs.append(raw)
            entry["parameters"] = {"binary_data_size": len(raw)}
        elif isinstance(output.values, np.ndarray):
            entry["data"] = output.values.reshape(-1).tolist()
        else:
            entry["data"] = [e.decode() for e in output.values]
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    body["outputs"] = outputs
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
