"""The images a call classifies, and how each kind travels.

A local file is passed explicitly, as a ``pathlib.Path`` (any ``os.PathLike``) or a binary file object, and is
read here; ``bytes`` are the encoded image itself; a ``str`` is only ever an http(s) URL, fetched by the server.
A ``str`` is never taken for a file name: an application passing user input through must not turn a client
into a reader of its own disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

# An image: a local file (a Path or a binary file object), the encoded image's bytes, or an http(s) URL.
ImageSource = str | bytes | bytearray | os.PathLike[str] | IO[bytes]


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def image_sources(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    """One image or several, as a list, each checked without touching the filesystem: ``ValueError`` for a
    ``str`` that is not an http(s) URL, ``TypeError`` for what is no image source at all."""
    one = isinstance(images, str | bytes | bytearray | os.PathLike) or hasattr(images, "read")
    sources: list[ImageSource] = [images] if one else list(images)  # type: ignore[list-item,arg-type]
    for source in sources:
        _check(source)
    return sources


def _check(source: object) -> None:
    if isinstance(source, str):
        if not is_url(source):
            raise ValueError(
                f"image {source[:200]!r} is a str but not an http(s) URL: a str is sent for the server to fetch,"
                f" never read as a file; pass a local file as Path({source[:200]!r}), its bytes, or an open file"
            )
    elif not (isinstance(source, bytes | bytearray | os.PathLike) or hasattr(source, "read")):
        raise TypeError(
            f"unsupported image {type(source).__name__}: pass a Path, bytes, a binary file object or an http(s) URL"
        )


def read_images(sources: Sequence[ImageSource]) -> list[bytes | str]:
    """Each file's bytes (blocking: files are read here), bytes as they are, a URL as itself.
    Raises ``OSError`` for an unreadable file."""
    return [_read(source) for source in sources]


def _read(source: ImageSource) -> bytes | str:
    if isinstance(source, str | bytes):
        return source
    if isinstance(source, bytearray):
        return bytes(source)
    if isinstance(source, os.PathLike):
        with open(source, "rb") as file:
            return file.read()
    data = source.read()
    if not isinstance(data, bytes):
        raise TypeError(f"file object {source!r} gave {type(data).__name__}, not bytes: open it in binary mode")
    return data
