"""An image classifier's tensors in the Open Inference Protocol, whatever the transport (REST or gRPC).

Inputs, exactly one per request:

- ``image``: BYTES, one encoded image file (JPEG, PNG, ...) per element; shape ``[N]`` (any shape of N elements);
- ``pixels``: FP32 ``[N, C, H, W]``, images already preprocessed as the version's card says (resize, crop,
  normalise): the model's own input, decoded by the client.

Outputs, every one when the request names none:

- ``probabilities``: FP32 ``[N, classes]``, the softmax of the logits;
- ``logits``: FP32 ``[N, classes]``;

and either one with the classification extension (``classification: k``, as Triton defines it) becomes BYTES
``[N, k]`` whose elements are ``"value:index:label"``, highest first, ``value`` being the output's own value
(a probability or a logit) printed as C's ``%f``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vitserve.model_store import Card
from vitserve.runtime.postprocess import softmax, top_k
from vitserve.service.core.errors import InvalidInput, PayloadTooLarge
from vitserve.service.inputs.body import ImageInput

IMAGE = "image"
PIXELS = "pixels"
PROBABILITIES = "probabilities"
LOGITS = "logits"
BYTES = "BYTES"
FP32 = "FP32"
MAX_DIMS = 8  # dimensions of an input's shape: an image input needs 1, pixels 4


@dataclass(frozen=True)
class TensorSpec:
    """A tensor in model metadata: ``-1`` marks the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def input_specs(card: Card) -> tuple[TensorSpec, ...]:
    size = card.config.img_size
    return TensorSpec(IMAGE, BYTES, (-1,)), TensorSpec(PIXELS, FP32, (-1, card.config.in_chans, size, size))


def output_specs(card: Card) -> tuple[TensorSpec, ...]:
    classes = card.config.num_classes
    return TensorSpec(PROBABILITIES, FP32, (-1, classes)), TensorSpec(LOGITS, FP32, (-1, classes))


@dataclass(frozen=True)
class InputTensor:
    """One input once its transport decoded it: BYTES elements, or FP32 values flattened row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: list[bytes] | np.ndarray


@dataclass(frozen=True)
class OutputRequest:
    """A requested output; ``binary`` is the REST binary data extension's choice (``None``: the request's)."""

    name: str
    classification: int | None = None
    binary: bool | None = None


@dataclass(frozen=True)
class OutputTensor:
    """A computed output: ``values`` is a float32 array of ``shape``, or BYTES elements row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | list[bytes]
    binary: bool | None = None  # carried from the request


def expect_one_input(names: Sequence[str]) -> None:
    """Raises ``InvalidInput`` unless the request has exactly one input (the names shown: at most four)."""
    if len(names) != 1:
        shown = ", ".join(repr(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
        raise InvalidInput(
            f"expected exactly one input ({IMAGE!r} BYTES or {PIXELS!r} FP32), got {len(names)}: [{shown}]"
        )


def check_declared(name: str, datatype: str, shape: Sequence[int], *, max_images: int) -> int:
    """The number of elements an input's declared ``shape`` holds, once its name, datatype and shape are checked
    (before any element is read or built). Python ints: no overflow whatever the dimensions. Raises
    ``InvalidInput`` (400), or ``PayloadTooLarge`` (413) for more than ``max_images`` images."""
    expected = {IMAGE: BYTES, PIXELS: FP32}.get(name)
    if expected is None:
        raise InvalidInput(f"unknown input {name!r}; expected {IMAGE!r} (BYTES) or {PIXELS!r} (FP32)")
    if datatype != expected:
        raise InvalidInput(f"input {name!r} must be {expected}, got {datatype}")
    if len(shape) > MAX_DIMS or (name == PIXELS and len(shape) != 4):
        wanted = "[N, C, H, W]" if name == PIXELS else f"at most {MAX_DIMS} dimensions"
        raise InvalidInput(f"input {name!r} must have shape {wanted}, got {len(shape)} dimensions")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: negative dimension in shape {list(shape)}")
    count = math.prod(shape)
    if count == 0:
        raise InvalidInput(f"no image in the request: input {name!r} has shape {list(shape)}, which holds nothing")
    images = count if name == IMAGE else shape[0]
    if images > max_images:
        raise PayloadTooLarge(f"{images} images in one request (shape {list(shape)}); the limit is {max_images}")
    return count


def images_from(inputs: Sequence[InputTensor], card: Card, *, max_images: int) -> list[ImageInput]:
    """The request's images, checked against the card. Raises ``InvalidInput`` (400), ``PayloadTooLarge`` (413)."""
    expect_one_input([t.name for t in inputs])
    tensor = inputs[0]
    count = check_declared(tensor.name, tensor.datatype, tensor.shape, max_images=max_images)
    if tensor.name == PIXELS:
        return [ImageInput(pixels=x) for x in _pixels(tensor, card, count)]
    if len(tensor.elements) != count:
        raise InvalidInput(
            f"input {IMAGE!r}: shape {list(tensor.shape)} holds {count} elements, got {len(tensor.elements)}"
        )
    return [ImageInput(data=bytes(e)) for e in tensor.elements]


def _pixels(tensor: InputTensor, card: Card, count: int) -> np.ndarray:
    """``(N, C, H, W)`` float32 from the flat values; the shape must be the model's input."""
    size, chans = card.config.img_size, card.config.in_chans
    if tuple(tensor.shape[1:]) != (chans, size, size):
        raise InvalidInput(f"input {PIXELS!r} must have shape [N, {chans}, {size}, {size}], got {list(tensor.shape)}")
    values = np.asarray(tensor.elements, dtype=np.float32)
    if values.size != count:
        raise InvalidInput(f"input {PIXELS!r}: shape {list(tensor.shape)} holds {count} values, got {values.size}")
    if not np.isfinite(values).all():
        raise InvalidInput(f"input {PIXELS!r} holds NaN or infinite values")
    return values.reshape(tensor.shape)


def check_outputs(requests: Sequence[OutputRequest] | None, card: Card, *, max_top_k: int) -> list[OutputRequest]:
    """The outputs to compute (every one when ``requests`` is ``None``), checked before any work is done."""
    if requests is None:
        return [OutputRequest(spec.name) for spec in output_specs(card)]
    names = [r.name for r in requests]
    classes = card.config.num_classes
    for request in requests:
        if request.name not in (PROBABILITIES, LOGITS):
            raise InvalidInput(f"unknown output {request.name!r}; expected {PROBABILITIES!r} or {LOGITS!r}")
        if names.count(request.name) > 1:
            raise InvalidInput(f"output {request.name!r} requested twice")
        k = request.classification
        if k is not None and not 1 <= k <= min(classes, max_top_k):
            raise InvalidInput(
                f"output {request.name!r}: classification must be between 1 and {min(classes, max_top_k)}, got {k}"
            )
    return list(requests)


def build_outputs(logits: np.ndarray, requests: Sequence[OutputRequest], labels: Sequence[str]) -> list[OutputTensor]:
    """``(N, C)`` float32 logits → the requested outputs, in the request's order."""
    logits = np.asarray(logits, dtype=np.float32)
    probabilities: np.ndarray | None = None
    outputs = []
    for request in requests:
        if request.name == PROBABILITIES:
            if probabilities is None:
                probabilities = softmax(logits).astype(np.float32)
            values = probabilities
        else:
            values = logits
        if request.classification is None:
            outputs.append(OutputTensor(request.name, FP32, values.shape, values, request.binary))
        else:
            k = request.classification
            as_logits = request.name == LOGITS
            elements = [_classes(logits[i], k, labels, as_logits=as_logits) for i in range(len(values))]
            flat = [e for row in elements for e in row]
            outputs.append(OutputTensor(request.name, BYTES, (len(values), k), flat, request.binary))
    return outputs


def _classes(logits: np.ndarray, k: int, labels: Sequence[str], *, as_logits: bool) -> list[bytes]:
    """Triton's ``"value:index:label"`` for the ``k`` best classes of one row: ``/classify``'s order, labels and
    (float64) scores, or the logits themselves."""
    return [
        f"{float(logits[p.index]) if as_logits else p.score:f}:{p.index}:{p.label}".encode()
        for p in top_k(logits, k, labels)
    ]


def pack_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES elements as the protocol's raw form: each one prefixed by its length (uint32, little-endian)."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack_bytes(raw: bytes | memoryview, what: str, *, count: int | None = None) -> list[bytes]:
    """The inverse of ``pack_bytes``; raises ``InvalidInput`` when a length runs past the end, or, with ``count``
    (the declared shape's element count), as soon as more than ``count`` elements are found."""
    view = memoryview(raw)
    elements: list[bytes] = []
    at = 0
    while at < len(view):
        if count is not None and len(elements) == count:
            raise InvalidInput(f"{what}: the BYTES data holds more than the {count} elements of its shape")
        if at + 4 > len(view):
            raise InvalidInput(f"{what}: truncated BYTES element length at byte {at}")
        (size,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + size > len(view):
            raise InvalidInput(f"{what}: a BYTES element of {size} bytes runs past the end ({len(view) - at} left)")
        elements.append(bytes(view[at : at + size]))
        at += size
    return elements


def fp32_from_raw(raw: bytes | memoryview, what: str) -> np.ndarray:
    """Little-endian float32 values from raw bytes."""
    if len(raw) % 4:
        raise InvalidInput(f"{what}: {len(raw)} bytes is not a whole number of FP32 values")
    return np.frombuffer(raw, dtype="<f4")


def raw_of(output: OutputTensor) -> bytes:
    """An output in the protocol's raw form (binary data extension, gRPC ``raw_output_contents``)."""
    if isinstance(output.values, np.ndarray):
        return np.ascontiguousarray(output.values, dtype="<f4").tobytes()
    return pack_bytes(output.values)
