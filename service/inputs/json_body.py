"""Classify JSON bodies parsed in bounded steps, so that no single call holds the interpreter long enough to
stall the event loop (the parsing runs on a worker thread, but C calls such as ``json.loads`` keep the GIL for
their whole duration: 80-300 ms for a 16 MB body on a busy 2-core machine).

1. The objects, arrays and strings are counted first (``bytes.count`` per 1 MiB chunk): a body listing more of
   them than ``max_images`` images can need is refused before anything is parsed (no million-entry lists, no
   nesting deep enough for a RecursionError).
2. String literals longer than ``LONG_STRING`` bytes (the base64 images) are cut out of the body by position and
   replaced by short placeholders; ``json.loads`` then parses only the small remainder.
3. Each cut-out ``image_base64`` is decoded in 1 MiB steps. A long string anywhere else is refused.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator

from vitserve.service.core.errors import InvalidInput, PayloadTooLarge

LONG_STRING = 64 * 1024  # bytes; longer JSON strings are cut out before parsing
CHUNK = 1 << 20  # bytes per step of counting and base64 decoding (~1 ms each)
PLACEHOLDER = "\x00long:"  # a cut-out string's stand-in: NUL never appears in a valid image_base64 or url

_DATA_URL = re.compile(rb"^\s*data:[\w/+.-]*(;[\w=-]+)*;base64,", re.ASCII)
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
# JSON escapes base64 text may carry: "\/" (PHP and others escape every slash) and escaped whitespace.
_ESCAPES = ((b"\\/", b"/"), (b"\\n", b""), (b"\\r", b""), (b"\\t", b""))


def count_nodes(body: bytes) -> tuple[int, int]:
    """(objects + arrays, string quotes) in ``body``, counted a chunk at a time.

    Also refuses an escaped NUL (``\\u0000``) anywhere: no valid field holds one, and it marks the placeholders
    of ``cut_long_strings``, which a client must not be able to forge."""
    nodes = quotes = 0
    for start in range(0, len(body), CHUNK):
        nodes += body.count(b"{", start, start + CHUNK) + body.count(b"[", start, start + CHUNK)
        quotes += body.count(b'"', start, start + CHUNK)
        if body.find(b"\\u0000", start, start + CHUNK + 5) >= 0:  # + 5: a sequence across the chunk edge
            raise InvalidInput("the JSON body holds a NUL character (\\u0000), which no field accepts")
    return nodes, quotes


def cut_long_strings(body: bytes, *, longer_than: int = LONG_STRING) -> tuple[bytes, list[memoryview]]:
    """``body`` with every string literal over ``longer_than`` bytes replaced by ``"<PLACEHOLDER><i>"``, and the
    raw bytes (still JSON-escaped, without quotes) of those strings, ``i`` being the index in that list."""
    parts: list[bytes] = []
    cut: list[memoryview] = []
    view = memoryview(body)
    pos = last = 0
    while (opening := body.find(b'"', pos)) >= 0:
        closing = closing_quote(body, opening + 1)
        if closing < 0:
            break  # unterminated: json.loads reports it
        if closing - opening - 1 > longer_than:
            parts += [body[last:opening], b'"\\u0000long:%d"' % len(cut)]
            cut.append(view[opening + 1 : closing])
            last = closing + 1
        pos = closing + 1
    parts.append(body[last:])
    return b"".join(parts), cut


def closing_quote(body: bytes, start: int) -> int:
    """The index of the quote that ends the string starting at ``start``, or -1."""
    pos = start
    while (quote := body.find(b'"', pos)) >= 0:
        if _backslashes_before(body, start, quote) % 2 == 0:
            return quote
        pos = quote + 1
    return -1


def _backslashes_before(body: bytes, start: int, end: int) -> int:
    """How many backslashes end ``body[start:end]``: counted by ``rstrip`` in growing windows (C speed, linear in
    the run), not a byte at a time (a body may hold megabytes of them)."""
    run, window = 0, 64
    while True:
        low = max(start, end - run - window)
        segment = body[low : end - run]
        stripped = len(segment) - len(segment.rstrip(b"\\"))
        run += stripped
        if stripped < len(segment) or low == start:
            return run
        window *= 2


def long_string_index(value: object) -> int | None:
    """The index of the cut-out string ``value`` stands for, or None when it is an ordinary value."""
    if isinstance(value, str) and value.startswith(PLACEHOLDER):
        return int(value[len(PLACEHOLDER) :])
    return None


def check_placements(raw: object, cut: list[memoryview], *, key: str | None = None) -> None:
    """Refuse a cut-out string anywhere but as an ``image_base64`` value (413, with its size)."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            check_placements(k, cut)
            check_placements(v, cut, key=k)
    elif isinstance(raw, list):
        for item in raw:
            check_placements(item, cut)
    elif (index := long_string_index(raw)) is not None and key != "image_base64":
        where = f"field {key!r}" if key else "a key or list item"
        raise PayloadTooLarge(f"a JSON string of {len(cut[index])} bytes in {where}; only image_base64 may be long")


def decode_long_base64(raw: memoryview) -> bytes:
    """Decode a cut-out ``image_base64`` (standard or URL-safe, optional ``data:`` prefix, whitespace ignored)."""
    head = _DATA_URL.match(bytes(raw[:512]))
    clean = bytearray()
    for chunk in _unescaped_chunks(raw[head.end() if head else 0 :]):
        clean += chunk
    clean += b"=" * (-len(clean) % 4)
    if clean.find(b"=", 0, max(0, len(clean) - 2)) >= 0:
        raise InvalidInput("image_base64 is not valid base64")
    out = bytearray()
    try:
        for start in range(0, len(clean), CHUNK):  # CHUNK is a multiple of 4: whole base64 quanta per step
            out += binascii.a2b_base64(clean[start : start + CHUNK], strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not valid base64") from None
    return bytes(out)


def _unescaped_chunks(raw: memoryview) -> Iterator[bytes]:
    start = 0
    while start < len(raw):
        end = min(start + CHUNK, len(raw))
        while end < len(raw) and raw[end - 1] == 0x5C:  # never split an escape
            end += 1
        chunk = bytes(raw[start:end])
        for escaped, plain in _ESCAPES:
            chunk = chunk.replace(escaped, plain)
        if b"\\" in chunk:
            raise InvalidInput("image_base64 is not valid base64")
        yield chunk.translate(_URL_SAFE, b" ")
        start = end
