"""The JSON header of a ``/v2`` inference request, read in bounded steps (on a worker thread).

The discipline of ``/classify``'s JSON bodies (``service.inputs.json_body``): a C call such as ``json.loads`` keeps
the GIL, and so stalls the event loop, for as long as it runs; so nothing is parsed whole before it is counted,
and no element is built before the declared shape allows it.

1. The strings are counted (``count_nodes``, 1 MiB per step): more than ``max_images`` images can need → 413.
2. Tensor data is cut out by position: every string over ``CUT_BYTES`` (a base64 image) and every numeric
   ``"data": [...]`` array over ``CUT_BYTES`` (FP32 pixels) becomes a short placeholder. What remains must be
   small (``remainder_limit``, else 413) and is parsed whole.
3. The caller checks each input's name, datatype and shape (``tensors.check_declared``); only then is its
   cut-out data decoded (``bytes_elements``, ``fp32_values``), in bounded steps, its element count checked first.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from vitserve.service.core.errors import InvalidInput, PayloadTooLarge
from vitserve.service.inputs.body import decode_base64
from vitserve.service.inputs.json_body import (
    CHUNK,
    closing_quote,
    count_nodes,
    cut_long_strings,
    decode_long_base64,
    long_string_index,
)
from vitserve.service.v2.schemas import InferRequestBody

CUT_BYTES = 1024  # strings and numeric data arrays longer than this are cut out of the header before parsing
NUMBER_CHUNK = 64 * 1024  # bytes of numbers per json.loads: ~13k values, a few ms
ARRAY_PLACEHOLDER = "\x00array:"  # a cut-out array's stand-in; clients cannot forge it (count_nodes refuses \u0000)

_AFTER_DATA_KEY = re.compile(rb"[ \t\r\n]{0,64}:[ \t\r\n]{0,64}\[")  # bounded: one regex call stays short
_NUMBER_BYTES = b"0123456789+-.eE \t\r\n"  # deleted from a numeric array, they leave its skeleton: [ ] and commas
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_END = object()  # the end of a list, in ``flat_elements``


@dataclass(frozen=True)
class Header:
    """A parsed header: the body with placeholders, the cut-out strings (raw JSON text without the quotes) and
    the cut-out numeric arrays (raw JSON text)."""

    body: InferRequestBody
    strings: list[memoryview]
    arrays: list[bytes]


def remainder_limit(max_images: int) -> int:
    """Bytes of header left once tensor data is cut out: room for ``max_images`` short strings and the fields."""
    return 64 * 1024 + 2 * CUT_BYTES * max_images


def parse_header(header: bytes, *, max_images: int) -> Header:
    """Count, cut, parse and validate; raises ``InvalidInput`` (400) or ``PayloadTooLarge`` (413)."""
    _, quotes = count_nodes(header)
    quote_limit = 6 * max_images + 512
    if quotes > quote_limit:
        raise PayloadTooLarge(
            f"the JSON header holds {quotes} quotes; at most {quote_limit} are accepted ({max_images} images)"
        )
    small, strings = cut_long_strings(header, longer_than=CUT_BYTES)
    small, arrays = cut_numeric_arrays(small)
    nodes, size_limit, node_limit = small.count(b"{") + small.count(b"["), remainder_limit(max_images), 1024
    node_limit += 4 * max_images  # {"b64": ...} elements, short nested data arrays and the fields' own
    if len(small) > size_limit or nodes > node_limit:
        raise PayloadTooLarge(
            f"the JSON header holds {len(small)} bytes and {nodes} objects and arrays besides its tensor data; at "
            f"most {size_limit} and {node_limit} are accepted (send large tensors as binary data)"
        )
    raw = _loads(small)
    _check_placements(raw, strings, arrays)
    try:
        body = InferRequestBody.model_validate(raw)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:5]]
        raise InvalidInput("invalid inference request: " + "; ".join(parts)) from None
    return Header(body, strings, arrays)


def _loads(small: bytes) -> Any:
    try:
        return json.loads(small)
    except RecursionError:
        raise InvalidInput("invalid inference request: the JSON header is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise InvalidInput(f"invalid inference request: the header is not valid JSON ({err.msg})") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid inference request: the header is not valid JSON") from None


def cut_numeric_arrays(body: bytes) -> tuple[bytes, list[bytes]]:
    """``body`` with every ``"data": [...]`` array of over ``CUT_BYTES`` that holds no string or object replaced by
    ``"<ARRAY_PLACEHOLDER><i>"``, and the arrays' text, ``i`` being the index in that list. The strings of
    ``body`` are few (counted) and short (``cut_long_strings`` ran first): walking them is cheap."""
    parts: list[bytes] = []
    arrays: list[bytes] = []
    pos = last = 0
    while (opening := body.find(b'"', pos)) >= 0:
        closing = closing_quote(body, opening + 1)
        if closing < 0:
            break  # unterminated: json.loads reports it
        pos = closing + 1
        key = _AFTER_DATA_KEY.match(body, pos) if body[opening:pos] == b'"data"' else None
        if key is None:
            continue
        start = key.end() - 1
        end = _numeric_array_end(body, start)
        if end - start > CUT_BYTES:
            parts += [body[last:start], b'"\\u0000array:%d"' % len(arrays)]
            arrays.append(body[start:end])
            last = pos = end
    parts.append(body[last:])
    return b"".join(parts), arrays


def _numeric_array_end(body: bytes, start: int) -> int:
    """Where the array opening at ``start`` ends when it holds no string and no object: after the last ``]``
    before the next quote or brace (a malformed array is refused later, by its skeleton); else ``start``."""
    stop = body.find(b'"', start)
    stop = len(body) if stop < 0 else stop
    for brace in (body.find(b"{", start, stop), body.find(b"}", start, stop)):
        stop = brace if brace >= 0 else stop
    close = body.rfind(b"]", start, stop)
    return close + 1 if close >= 0 else start


def array_index(value: object) -> int | None:
    """The index of the cut-out array ``value`` stands for, or None when it is an ordinary value."""
    if isinstance(value, str) and value.startswith(ARRAY_PLACEHOLDER):
        return int(value[len(ARRAY_PLACEHOLDER) :])
    return None


def _check_placements(raw: Any, strings: list[memoryview], arrays: list[bytes]) -> None:
    """Refuse cut-out text anywhere but in an input's ``data`` (413, with its size). Iterative: the nesting is
    bounded by the node limit, not by Python's recursion limit."""
    inputs = raw.get("inputs") if isinstance(raw, dict) else None
    if not isinstance(inputs, list):
        pending: list[tuple[Any, str]] = [(raw, "the header")]
    else:
        pending = [({k: v for k, v in raw.items() if k != "inputs"}, "the header")]
        pending += [
            ({k: v for k, v in i.items() if k != "data"} if isinstance(i, dict) else i, "inputs") for i in inputs
        ]
    while pending:
        value, where = pending.pop()
        if isinstance(value, dict):
            pending += [(k, "a key") for k in value] + [(v, f"field {k!r}") for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(item, where) for item in value]
        elif (index := long_string_index(value)) is not None:
            size = len(strings[index])
            raise PayloadTooLarge(f"a JSON string of {size} bytes in {where}; only tensor data may be long")
        elif (index := array_index(value)) is not None:
            size = len(arrays[index])
            raise PayloadTooLarge(f"a JSON array of {size} bytes in {where}; only tensor data may be long")


def flat_elements(data: Any, count: int, what: str) -> list[Any]:
    """The elements of (nested) lists, row-major, without recursion; refuses more than ``count`` at once."""
    elements: list[Any] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        elif len(elements) == count:
            raise InvalidInput(f"{what}: data holds more than the {count} elements of its shape")
        else:
            elements.append(item)
    return elements


def bytes_elements(data: Any, header: Header, count: int, what: str) -> list[bytes]:
    """A JSON BYTES input's elements: base64 strings (or ``{"b64": string}``), decoded once they are counted."""
    if array_index(data) is not None:
        raise InvalidInput(f"{what}: BYTES elements in JSON must be base64 strings, got an array of numbers")
    elements = flat_elements(data, count, what)
    if len(elements) != count:
        raise InvalidInput(f"{what}: its shape holds {count} elements, got {len(elements)}")
    return [_element_bytes(e, header, what) for e in elements]


def _element_bytes(element: Any, header: Header, what: str) -> bytes:
    if isinstance(element, dict) and set(element) == {"b64"}:
        element = element["b64"]
    if not isinstance(element, str):
        raise InvalidInput(f"{what}: BYTES elements in JSON must be base64 strings, got {type(element).__name__}")
    index = long_string_index(element)
    try:
        if index is not None:
            return decode_long_base64(header.strings[index])
        try:  # standard base64 first, at C speed; decode_base64 then accepts URL-safe, data: URLs and whitespace
            return binascii.a2b_base64(element, strict_mode=True)  # strict: no stray characters skipped
        except (binascii.Error, ValueError):
            return decode_base64(element)
    except InvalidInput:
        raise InvalidInput(f"{what}: an element is not valid base64 (send the image file base64-encoded)") from None


def fp32_values(data: Any, header: Header, shape: Sequence[int], count: int, what: str) -> np.ndarray:
    """A JSON FP32 input's ``count`` values, flat: JSON numbers in an array, flat or nested as ``shape``."""
    index = array_index(data)
    if index is not None:
        return _numeric_array(header.arrays[index], shape, count, what)
    # A short array, parsed with the header: at most CUT_BYTES of text.
    numbers = flat_elements(data, count, what) if isinstance(data, list) else [data]
    if not isinstance(data, list) or not all(type(n) in (int, float) for n in numbers):
        raise InvalidInput(f"{what}: data is not an array of numbers")
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused with the NaNs later
            values = np.asarray(data, dtype=np.float32)
    except (ValueError, OverflowError):
        raise _nesting_error(what, shape) from None
    if values.ndim != 1 and values.shape != tuple(shape):
        raise _nesting_error(what, shape)
    if values.size != count:
        raise InvalidInput(f"{what}: shape {list(shape)} holds {count} values, got {values.size}")
    return values.reshape(-1)


def _nesting_error(what: str, shape: Sequence[int]) -> InvalidInput:
    return InvalidInput(f"{what}: data must be an array of numbers, flat or nested as the shape {list(shape)}")


def _numeric_array(text: bytes, shape: Sequence[int], count: int, what: str) -> np.ndarray:
    """Parse a cut-out array in bounded steps: its commas counted against ``count`` first, then its skeleton
    (brackets and commas) compared with a flat or a ``shape``-nested array, then the numbers read."""
    commas = sum(text.count(b",", start, start + CHUNK) for start in range(0, len(text), CHUNK))
    if commas + 1 != count:
        raise InvalidInput(f"{what}: shape {list(shape)} holds {count} values, got {commas + 1}")
    skeleton = b"".join(text[i : i + CHUNK].translate(None, _NUMBER_BYTES) for i in range(0, len(text), CHUNK))
    if skeleton != _skeleton([count]) and skeleton != _skeleton(shape):
        raise _nesting_error(what, shape)
    values = np.empty(count, dtype=np.float32)
    filled = 0
    for chunk in _number_chunks(text):
        numbers = _json_numbers(chunk, what)
        if filled + len(numbers) > count:
            break
        values[filled : filled + len(numbers)] = numbers
        filled += len(numbers)
        # Hand the GIL to the event loop if it waits: back to back, these C calls kept it waiting 100-300 ms per
        # wake-up on a busy 2-core machine (measured); with this, 3 ms.
        time.sleep(0)
    if filled != count:
        raise InvalidInput(f"{what}: shape {list(shape)} holds {count} values; the data does not")
    return values


def _skeleton(shape: Sequence[int]) -> bytes:
    """The brackets and commas of an array of ``shape``, every dimension at least 1 (``[2, 2]`` → ``[[,],[,]]``)."""
    inner = b""
    for d in reversed(shape):
        inner = b"[" + (inner + b",") * (d - 1) + inner + b"]"
    return inner


def _number_chunks(text: bytes) -> Iterator[bytes]:
    """The numbers of an array (brackets blanked) in pieces of about ``NUMBER_CHUNK`` bytes, cut at commas."""
    start = 0
    while start < len(text):
        comma = text.find(b",", start + NUMBER_CHUNK)
        end = len(text) if comma < 0 else comma
        yield text[start:end].translate(_BRACKETS_TO_SPACES)
        start = end + 1


def _json_numbers(chunk: bytes, what: str) -> np.ndarray:
    try:
        numbers = json.loads(b"[" + chunk + b"]")
        with np.errstate(over="ignore"):
            return np.asarray(numbers, dtype=np.float64).astype(np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{what}: data is not an array of numbers") from None
