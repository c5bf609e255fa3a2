"""Counting a ``ModelInferRequest``'s entries on the wire before protobuf builds them.

A 20 MiB message can hold a million tiny entries (a million ``inputs``, a million empty ``bytes_contents``), and
protobuf builds an object for each before anything can count them: seconds of CPU with the pure-Python runtime,
hundreds of milliseconds with the C one. So the message's fields are walked first, without building anything,
and the walk stops as soon as a count passes what a valid request can hold: the top-level fields (model, version,
id, parameters, one input, a few outputs, one raw contents), each input's own fields, and its contents' entries.
What is left to parse is then a handful of fields, whatever their sizes.

The wire format (protobuf's encoding): each field is a varint tag ``(number << 3) | wire type`` followed by a
varint (type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5).
"""

from __future__ import annotations

from collections.abc import Iterator

from vitserve.service.core.errors import InvalidInput, PayloadTooLarge

MAX_TOP_FIELDS = 64  # model_name, model_version, id, parameters, inputs, outputs, raw_input_contents, with room
MAX_TENSOR_FIELDS = 64  # name, datatype, shape (packed: one field), parameters, contents
INFER_REQUEST = "inference.ModelInferRequest"
_INPUTS, _CONTENTS = 5, 5  # ModelInferRequest.inputs; InferInputTensor.contents


def check_wire(raw: bytes, message: str, *, max_images: int) -> None:
    """Raise ``PayloadTooLarge`` when ``raw`` (a serialised ``message``, the protobuf full name) holds more entries
    than a valid request of at most ``max_images`` images can, ``InvalidInput`` when it is not protobuf's encoding;
    return once it is known to be small enough to parse. Work is bounded by the limits, not by the message."""
    view = memoryview(raw)
    infer = message == INFER_REQUEST
    for number, start, end in _fields(view, 0, len(view), MAX_TOP_FIELDS, "the request message"):
        if infer and number == _INPUTS and end is not None:
            for inner, at, stop in _fields(view, start, end, MAX_TENSOR_FIELDS, "an input tensor"):
                if inner == _CONTENTS and stop is not None:
                    # One entry per element, or one packed field per datatype: never more than the images allowed.
                    for _ in _fields(view, at, stop, max_images + 8, "an input's contents"):
                        pass


def _fields(view: memoryview, at: int, end: int, limit: int, what: str) -> Iterator[tuple[int, int, int | None]]:
    """``(field number, start, end)`` of each field in ``view[at:end]`` (``end`` None for a non-length field),
    refusing the ``limit + 1``-th."""
    count = 0
    while at < end:
        count += 1
        if count > limit:
            raise PayloadTooLarge(f"{what} holds more than {limit} fields; a valid request holds far fewer")
        tag, at = _varint(view, at, end)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            _, at = _varint(view, at, end)
            yield number, at, None
        elif kind == 1 or kind == 5:
            at += 8 if kind == 1 else 4
            yield number, at, None
        elif kind == 2:
            length, at = _varint(view, at, end)
            if at + length > end:
                raise InvalidInput(f"{what} is cut short: not a valid protobuf encoding")
            yield number, at, at + length
            at += length
        else:
            raise InvalidInput(f"{what} has a field of wire type {kind}: not a valid protobuf encoding")
    if at > end:
        raise InvalidInput(f"{what} is cut short: not a valid protobuf encoding")


def _varint(view: memoryview, at: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while at < end and shift < 64:
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise InvalidInput("a varint is cut short or too long: not a valid protobuf encoding")
