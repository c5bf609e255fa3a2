"""REST bodies ↔ protocol requests and responses: JSON, and the binary tensor data extension.

Binary tensor data: the ``Inference-Header-Content-Length`` header gives the length of the JSON that starts
the body; the bytes after it are the inputs that carry ``binary_data_size``, in input order, each in the raw
form (FP32: little-endian floats; BYTES: each element prefixed by its uint32 little-endian length). Outputs
come back the same way when asked (``binary_data`` on an output, else ``binary_data_output`` on the request).
"""

from __future__ import annotations

import binascii
import json
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from vitserve.service.core.errors import InvalidInput
from vitserve.service.inputs.body import decode_base64
from vitserve.service.v2.protocol import InferRequest, InferResponse
from vitserve.service.v2.schemas import InferRequestBody, Parameters, RequestInput
from vitserve.service.v2.tensors import BYTES, FP32, InputTensor, OutputRequest, fp32_from_raw, raw_of, unpack_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"

T = TypeVar("T", int, bool)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(the JSON part, the binary part) of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {header_length!r}; the body has {len(body)} bytes")
    size = int(header_length)
    return body[:size], memoryview(body)[size:]


def decode_request(
    header: bytes, binary: memoryview, *, model: str, version: str | None, fallback_id: str | None
) -> tuple[InferRequest, bool]:
    """The request and whether its outputs default to binary data. ``fallback_id`` (the X-Request-Id header)
    names the request when its body gives no ``id``."""
    try:
        body = InferRequestBody.model_validate_json(header)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()]
        raise InvalidInput("invalid inference request: " + "; ".join(parts)) from None
    inputs, at = [], 0
    for item in body.inputs:
        size = _param(item.parameters, "binary_data_size", int)
        if size is None:
            inputs.append(_json_input(item))
            continue
        if item.data is not None:
            raise InvalidInput(f"input {item.name!r} has both data and binary_data_size")
        if at + size > len(binary):
            raise InvalidInput(f"input {item.name!r}: binary_data_size {size} runs past the body's binary part")
        inputs.append(_binary_input(item, binary[at : at + size]))
        at += size
    if at != len(binary):
        raise InvalidInput(f"{len(binary) - at} bytes of binary data that no input claims")
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
        inputs=inputs,
        outputs=outputs,
        id=body.id if body.id is not None else fallback_id,
        timeout_s=timeout_us / 1e6 if timeout_us is not None and timeout_us > 0 else None,
    )
    return request, bool(_param(body.parameters, "binary_data_output", bool))


def _param(parameters: Parameters | None, key: str, kind: type[T]) -> T | None:
    if not parameters or parameters.get(key) is None:
        return None
    value = parameters[key]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise InvalidInput(f"parameter {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _binary_input(item: RequestInput, raw: memoryview) -> InputTensor:
    what = f"input {item.name!r}"
    if item.datatype == BYTES:
        return InputTensor(item.name, BYTES, tuple(item.shape), unpack_bytes(raw, what))
    if item.datatype == FP32:
        return InputTensor(item.name, FP32, tuple(item.shape), fp32_from_raw(raw, what))
    raise InvalidInput(f"{what}: datatype {item.datatype} is not accepted; expected BYTES or FP32")


def _json_input(item: RequestInput) -> InputTensor:
    what = f"input {item.name!r}"
    if item.data is None:
        raise InvalidInput(f"{what} has neither data nor binary_data_size")
    if item.datatype == BYTES:
        return InputTensor(item.name, BYTES, tuple(item.shape), [_base64(e, what) for e in _flat(item.data)])
    if item.datatype == FP32:
        try:
            values = np.asarray(item.data, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidInput(f"{what}: data is not an array of numbers") from None
        return InputTensor(item.name, FP32, tuple(item.shape), values)
    raise InvalidInput(f"{what}: datatype {item.datatype} is not accepted; expected BYTES or FP32")


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [e for d in data for e in _flat(d)]
    return [data]


def _base64(element: Any, what: str) -> bytes:
    """A JSON BYTES element: a base64 string, or ``{"b64": string}``."""
    if isinstance(element, dict) and set(element) == {"b64"}:
        element = element["b64"]
    if not isinstance(element, str):
        raise InvalidInput(f"{what}: BYTES elements in JSON must be base64 strings, got {type(element).__name__}")
    try:  # standard base64 first, at C speed; decode_base64 then accepts URL-safe, data: URLs and whitespace
        return binascii.a2b_base64(element, strict_mode=True)  # strict: no stray characters skipped
    except (binascii.Error, ValueError):
        pass
    try:
        return decode_base64(element)
    except InvalidInput:
        raise InvalidInput(f"{what}: an element is not valid base64 (send the image file base64-encoded)") from None


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
