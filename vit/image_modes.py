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
    """Blend an RGBA image over an opaque white background; returns RGB."""
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel array to uint8 per the table in this module."""
    data = np.nan_to_num(values.astype(np.float64), nan=0.0)  # NaN pixels (float TIFFs) count as 0
    if data.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(data.min()), float(data.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = data / 257.0  # 65535 / 255: white stays white, every 8-bit level keeps its place
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = data * 255.0
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = data
    else:
        # Outside any conventional range, a linear stretch shows the content instead of a clipped slab.
        scaled = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
