"""Any Pillow pixel mode → 8-bit RGB, the way a viewer would show it.

| mode                         | rule                                                                     |
|------------------------------|--------------------------------------------------------------------------|
| RGB                          | unchanged                                                                |
| 1, L, CMYK, YCbCr, RGBX, HSV | Pillow's ``convert("RGB")`` (CMYK without an ICC transform)              |
| RGBA, RGBa, LA, La, PA       | alpha composited over white                                              |
| P, L, RGB with transparency  | the transparent colour/entries composited over white, like RGBA          |
| I;16, I;16L, I;16B, I;16N    | full 16-bit range scaled to 8 bits: round(v / 257), never clipped        |
| I (32-bit integer)           | as I;16 when every value is in [0, 65535]; otherwise min–max stretched   |
| F (32-bit float)             | × 255 when every value is in [0, 1]; as is when in [0, 255]; else min–max |
| anything else (LAB, ...)     | ``UnsupportedImageType``                                                 |

White is the background because photographs with cut-out subjects (product shots, logos) are drawn on white
by browsers and by the datasets they come from; black would invent a dark frame around the subject.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from PIL import Image

from vitserve.vit.image_errors import UnsupportedImageType

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_KEYED_MODES = frozenset({"P", "L", "RGB"})  # modes where info["transparency"] marks transparent pixels
_DIRECT_MODES = frozenset({"1", "L", "P", "CMYK", "YCbCr", "RGBX", "HSV"})
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB image (the same object when it already is one without transparency)."""
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in _KEYED_MODES and "transparency" in image.info):
        return composite_on_white(image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode in _WIDE_MODES:
        return Image.fromarray(wide_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    raise UnsupportedImageType(f"pixel mode {mode!r} is not supported")


def composite_on_white(rgba: Image.Image) -> Image.Image:
    """Blend an RGBA image over an opaque white background; returns RGB.

    Pasted through its own alpha onto a white RGB canvas: 3 + 4 bytes per pixel at the peak, where an RGBA
    background and ``alpha_composite`` would hold 4 + 4 + 4 + 3 (a 20 MP image: ~140 MB instead of ~300 MB).
    """
    canvas = Image.new("RGB", rgba.size, _WHITE[:3])
    canvas.paste(rgba, (0, 0), rgba)
    return canvas


# Pixels of a wide-mode image scaled per step: bounds the working copies (float64 values, or the lookup's
# indices) to ~8 MB whatever the image size (a whole-image float64 copy of a 40 MP 16-bit PNG was 320 MB).
_CHUNK_PIXELS = 1 << 20


@functools.cache
def _sixteen_bit_table() -> np.ndarray:
    """round(v / 257) for every 16-bit v (65535 / 255: white stays white, every 8-bit level keeps its place).
    No v is a tie: 257k + 128.5 is never an integer."""
    return np.rint(np.arange(65536, dtype=np.float64) / 257.0).astype(np.uint8)


def wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel array to uint8 per the table in this module.

    Memory: the uint8 result plus one chunk of ``_CHUNK_PIXELS`` working values; ``values`` is never copied
    whole. 16-bit values go through a 64 KiB lookup table (one pass; a 40 MP image in ~0.1 s).
    """
    out = np.zeros(values.shape, np.uint8)
    if values.size == 0:
        return out
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    if mode.startswith("I;16"):
        _look_up(flat_in, flat_out)
        return out
    low, high = np.inf, -np.inf
    for chunk in _float_chunks(flat_in):
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if mode == "I" and low >= 0 and high <= 65535:
        _look_up(flat_in, flat_out)
        return out
    if mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif mode == "F" and low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif high > low:
        # Outside any conventional range, a linear stretch shows the content instead of a clipped slab.
        scale, offset = 255.0 / (high - low), low
    else:
        return out
    for start, chunk in zip(range(0, flat_in.size, _CHUNK_PIXELS), _float_chunks(flat_in), strict=True):
        flat_out[start : start + _CHUNK_PIXELS] = np.clip(np.rint((chunk - offset) * scale), 0, 255)
    return out


def _look_up(flat_in: np.ndarray, flat_out: np.ndarray) -> None:
    """``flat_out = round(flat_in / 257)`` for integer values known to lie in [0, 65535], a chunk at a time."""
    table = _sixteen_bit_table()
    for start in range(0, flat_in.size, _CHUNK_PIXELS):
        flat_out[start : start + _CHUNK_PIXELS] = table[flat_in[start : start + _CHUNK_PIXELS]]


def _float_chunks(flat: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, flat.size, _CHUNK_PIXELS):
        yield np.nan_to_num(flat[start : start + _CHUNK_PIXELS].astype(np.float64), nan=0.0)  # NaN pixels count as 0
