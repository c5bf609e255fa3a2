"""Real photographs (scikit-image's samples) and encoders for the decode/preprocess tests."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache
from typing import Any

import numpy as np
import skimage.data
from PIL import Image


@cache
def photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8: astronaut 512², chelsea 300×451, coffee 400×600, rocket 427×640, retina 1411²."""
    array = getattr(skimage.data, name)()
    array.setflags(write=False)
    return array


def encode(image: Image.Image | np.ndarray, fmt: str, **params: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def upscale(array: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC))


def mosaic() -> np.ndarray:
    """1200×1600 grid of native-resolution crops of four photos: real fine detail at a draft-worthy size."""
    tiles = [_centre_crop(photo(name), 300, 400) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    rows = [np.concatenate([tiles[(r + c) % 4] for c in range(4)], axis=1) for r in range(4)]
    return np.concatenate(rows, axis=0)


def _centre_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    top = (array.shape[0] - height) // 2
    left = (array.shape[1] - width) // 2
    return array[top : top + height, left : left + width]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2, idat: bytes = b"") -> bytes:
    """A PNG whose valid IHDR (correct CRC) claims ``width``×``height``; ``idat`` is its compressed pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat or zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A real baseline JPEG with its SOF0 frame header patched to claim ``width``×``height`` (≤ 65535 each)."""
    start = jpeg.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    patched = bytearray(jpeg)
    patched[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def gif_with_screen(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF with the given logical-screen size and one frame descriptor of ``frame`` size (tiny pixel data)."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0)
    pixels = b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one 2-byte sub-block, terminator
    return header + descriptor + pixels + b";"
