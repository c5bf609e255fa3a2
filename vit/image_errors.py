"""The input-image errors, each with the machine-readable ``code`` and HTTP ``status`` the service reports."""

from __future__ import annotations

from typing import ClassVar


class ImageError(ValueError):
    """Base of the input-image errors; ``code`` and ``status`` are what the service's JSON error carries."""

    code: ClassVar[str] = "invalid_image"
    status: ClassVar[int] = 400


class InvalidImage(ImageError):
    """Empty, truncated, corrupt or not an image at all."""

    code = "invalid_image"
    status = 400


class ImageTooLarge(ImageError):
    """Over the byte cap or the pixel cap (including what Pillow flags as a decompression bomb)."""

    code = "image_too_large"
    status = 413


class UnsupportedImageType(ImageError):
    """A recognised format (or pixel mode) that we refuse to decode."""

    code = "unsupported_media_type"
    status = 415
