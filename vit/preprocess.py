"""Preprocessing shared by the service, the evaluator and the predictor: image → model input.

``preprocess`` = ``load_image`` (decode, guard, EXIF-transpose, RGB) → ``transform`` (resize the shorter side to
``DataConfig.resize_size``, centre-crop ``img_size``, scale to [0, 1], normalise, CHW). ``transform`` matches
timm's eval transform (``timm.data.create_transform(..., crop_pct, interpolation)``), which is what the
MAE/timm weights were evaluated with: the same Pillow resize, timm's crop rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, ImageOps

from vitserve.vit.config import DataConfig
from vitserve.vit.decode import DEFAULT_LIMITS, DecodeLimits, decode_image
from vitserve.vit.image_errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedImageType
from vitserve.vit.image_modes import to_rgb

__all__ = [
    "DecodeLimits",
    "ImageError",
    "ImageSource",
    "ImageTooLarge",
    "InvalidImage",
    "UnsupportedImageType",
    "decode_image",
    "load_image",
    "preprocess",
    "resized_size",
    "transform",
]

# A file path, encoded bytes, a PIL image, or an array (H, W, 3|4) / (H, W) uint8.
ImageSource: TypeAlias = str | Path | bytes | Image.Image | np.ndarray

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def load_image(
    src: ImageSource, *, limits: DecodeLimits = DEFAULT_LIMITS, target_size: int | None = None
) -> Image.Image:
    """Any supported source → RGB ``PIL.Image``. Files and bytes go through ``decode_image`` (caps, EXIF);
    a PIL image is EXIF-transposed and converted (the caller's object is not modified); arrays are taken as
    upright pixels. ``target_size`` as in ``decode_image``. Raises the ``ImageError`` family (a missing file:
    ``FileNotFoundError``). A PIL image is trusted: it is not held to ``limits``.
    """
    if isinstance(src, bytes | bytearray | memoryview):
        return decode_image(bytes(src), limits=limits, target_size=target_size)
    if isinstance(src, str | Path):
        return decode_image(_read_capped(Path(src), limits.max_bytes), limits=limits, target_size=target_size)
    if isinstance(src, Image.Image):
        return to_rgb(ImageOps.exif_transpose(src))
    if isinstance(src, np.ndarray):
        return _from_array(src)
    raise TypeError(f"unsupported image source type {type(src).__name__}; expected path, bytes, PIL image or array")


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``shorter`` and the longer one truncated, as torchvision does."""
    width, height = size
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def transform(image: Image.Image, cfg: DataConfig) -> np.ndarray:
    """RGB image → ``(3, img_size, img_size)`` float32: resize, centre crop, [0, 1], (x − mean) / std."""
    if image.mode != "RGB":
        raise ValueError(f"transform expects an RGB image, got mode {image.mode!r}; use load_image first")
    width, height = resized_size(image.size, cfg.resize_size)
    resized = image.resize((width, height), _RESAMPLE[cfg.interpolation])
    size = cfg.img_size
    # timm/torchvision CenterCrop rounding: round half to even on the half-pixel offset.
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    pixels = np.asarray(resized.crop((left, top, left + size, top + size)))  # (H, W, 3) uint8
    # (x / 255 − mean) / std as one multiply-add per element, on the channels-first copy (CHW).
    chw = pixels.transpose(2, 0, 1).astype(np.float32, order="C")
    scale = (1.0 / (255.0 * np.asarray(cfg.std, dtype=np.float64))).astype(np.float32)
    shift = (np.asarray(cfg.mean, dtype=np.float64) / np.asarray(cfg.std, dtype=np.float64)).astype(np.float32)
    chw *= scale[:, None, None]
    chw -= shift[:, None, None]
    return chw


def preprocess(images: Sequence[ImageSource], cfg: DataConfig, *, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A batch of sources → ``(B, 3, img_size, img_size)`` float32 (B may be 0). Raises on the first bad image."""
    batch = np.empty((len(images), 3, cfg.img_size, cfg.img_size), dtype=np.float32)
    for index, src in enumerate(images):
        batch[index] = transform(load_image(src, limits=limits, target_size=cfg.resize_size), cfg)
    return batch


def _read_capped(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # one byte more tells "over the cap" without reading it all
    except IsADirectoryError as err:
        raise InvalidImage(f"{path} is a directory, not an image file") from err
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{path} is over the {max_bytes}-byte limit")
    return data


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidImage(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGB" if array.shape[2] == 3 else "RGBA"))
    raise InvalidImage(f"image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}")
