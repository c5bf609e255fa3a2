"""Guarded image decoding: untrusted bytes → an RGB ``PIL.Image``, or a typed ``ImageError``.

The guards run in order of cost: the byte cap on ``len(data)``; the pixel cap on the size read from the header
(``Image.open`` parses headers only, except WebP's, which allocates its canvas inside ``open`` and so is
checked from its RIFF header here first); only then are pixels decoded. Pillow's own bomb guard
(``Image.MAX_IMAGE_PIXELS``) is never changed and never relied on; when it fires first, its error (or its
warning, where a warnings filter turns it into an exception) is reported as ``ImageTooLarge`` too.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vitserve.vit.image_errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedImageType
from vitserve.vit.image_modes import to_rgb

logger = logging.getLogger(__name__)

# Raster formats we decode (Pillow's names). JPEG includes what Pillow calls MPO: the multi-picture JPEGs that
# phones and cameras write, which its JPEG plugin opens.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# File name extensions that folder scans (training, evaluation, folder prediction) treat as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_JPEG_FORMATS = ("JPEG", "MPO")

# Refused outright, by signature: vector/document formats whose decoders run interpreters (Ghostscript for EPS)
# or that Pillow cannot read at all but that clients send by mistake.
_REFUSED_SIGNATURES = ((b"%PDF-", "PDF"), (b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"))

# What a malformed file makes Pillow raise while parsing or decoding (truncation is an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, zlib.error)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied before any pixel is decoded."""

    max_bytes: int = 20 * 1024 * 1024  # encoded size
    max_pixels: int = 40_000_000  # width × height from the header (a 40 MP photo decodes to 120 MB of RGB)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError(f"invalid DecodeLimits: max_bytes {self.max_bytes}, max_pixels {self.max_pixels}")


DEFAULT_LIMITS = DecodeLimits()

# JPEG draft mode (DCT-domain downscaling by 2, 4 or 8 inside libjpeg) is used only while the drafted image's
# shorter side stays at least DRAFT_MARGIN times the resize target, so the final bicubic resize still averages
# over two or more source pixels. Measured: final normalised tensor, draft vs. full decode, worst over JPEGs
# (quality 95 and 75) of real photographs: scikit-image's retina (cropped to 1408²), hubble 872×1000, 4×4
# mosaics of eight photos at native resolution (1200×1600 and 1600×1200), and astronaut 2048², coffee
# 4000×3000, chelsea 1804×1200, motorcycle 2964×2000 upscaled; one 8-bit level is 0.0174 after normalising:
#   margin 1.0 (224/256): max |Δ| 0.68, mean |Δ| 0.030   (384/438): max 0.42, mean 0.017
#   margin 1.5 (224/256): max |Δ| 0.24, mean |Δ| 0.011   (384/438): max 0.12, mean 0.006
#   margin 2.0 (224/256): max |Δ| 0.15, mean |Δ| 0.0073  (384/438): max 0.09, mean 0.005
# 2.0 keeps the mean error under half a level; the max is at the mosaics' artificial tile seams.
# tests/vit/test_decode.py asserts max |Δ| ≤ 0.2 and mean |Δ| ≤ 0.01 on its photos.
DRAFT_MARGIN = 2.0


def decode_image(data: bytes, *, limits: DecodeLimits = DEFAULT_LIMITS, target_size: int | None = None) -> Image.Image:
    """Decode untrusted bytes to an RGB image, upright per its EXIF orientation.

    ``target_size``: the shorter side the caller will resize to (``DataConfig.resize_size``); when given, a
    large JPEG is decoded at a reduced scale (see ``DRAFT_MARGIN``). Animated GIF/WebP and multi-page TIFF
    give their first frame. Raises ``ImageTooLarge`` (byte or pixel cap), ``UnsupportedImageType`` (a format
    outside ``ALLOWED_FORMATS`` or an unconvertible mode) or ``InvalidImage`` (anything undecodable).
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    if not data:
        raise InvalidImage("empty image: zero bytes received")
    webp_size = _webp_canvas_size(data)
    if webp_size is not None:
        _check_pixels(webp_size, limits, "WEBP")
    try:
        image = _open(data)
        _check_pixels(image.size, limits, image.format, image.mode)
        if target_size is not None:
            _draft(image, target_size)
        image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"image rejected as a decompression bomb: {err}") from err
    except _DECODE_ERRORS as err:
        raise InvalidImage(f"could not decode the image (truncated or corrupt): {err}") from err
    _exif_transpose(image)
    return to_rgb(image)


def costly_pixels(data: bytes) -> int:
    """Pixels a decode of ``data`` will materialise at full size, from its header alone (0 when the header does
    not say, and for JPEG, which is decoded at a reduced scale). Lets a caller route the expensive decodes (a
    16-bit 40 MP PNG takes seconds) away from the cheap ones before any pixel is decoded."""
    webp_size = _webp_canvas_size(data)
    if webp_size is not None:
        return webp_size[0] * webp_size[1]
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            return 0 if image.format in _JPEG_FORMATS else image.size[0] * image.size[1]
    except Exception:
        return 0


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        refused = _refused_format(data)
        if refused is not None:
            raise UnsupportedImageType(
                f"{refused} images are not supported; send one of {', '.join(ALLOWED_FORMATS)}"
            ) from None
        if _sniff_pillow_format(data, ALLOWED_FORMATS):
            raise InvalidImage("corrupt or truncated image header") from None
        raise InvalidImage(f"not a recognisable image; send one of {', '.join(ALLOWED_FORMATS)}") from None


# Bytes per pixel of the pixel modes wider than RGB, as decoded: each is held whole before it becomes RGB.
_WIDE_BYTES = {"RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4, "PA": 4, "LA": 4, "La": 4}


def pixel_limit(limits: DecodeLimits, mode: str | None) -> int:
    """The pixel cap for an image decoded as ``mode``: ``max_pixels`` for up to 3 bytes per pixel, fewer for
    wider modes so that the decoded pixels never exceed the RGB bytes of ``max_pixels`` (a 40 MP cap lets an
    RGBA or 32-bit image have 30 MP)."""
    return limits.max_pixels * 3 // max(3, _WIDE_BYTES.get(mode or "", 3))


def _check_pixels(size: tuple[int, int], limits: DecodeLimits, fmt: str | None, mode: str | None = None) -> None:
    width, height = size
    limit = pixel_limit(limits, mode)
    if width * height > limit:
        wide = f" for {mode} pixels" if limit < limits.max_pixels else ""
        raise ImageTooLarge(
            f"{fmt or 'image'} is {width}×{height} = {width * height} pixels; the limit{wide} is {limit}"
        )


def _refused_format(data: bytes) -> str | None:
    """Name a format we recognise but refuse, or None."""
    for signature, name in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return name
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in head:
        return "SVG"
    others = [name for name in Image.OPEN if name not in ALLOWED_FORMATS]
    return _sniff_pillow_format(data, others)


def _sniff_pillow_format(data: bytes, formats: Iterable[str]) -> str | None:
    """The first of ``formats`` whose Pillow signature check accepts ``data`` (no parsing beyond the prefix)."""
    Image.init()  # registers every plugin's signature check; idempotent, and what Image.open does itself
    prefix = data[:16]
    for name in formats:
        _factory, accept = Image.OPEN.get(name, (None, None))
        # Plugins without a signature check (TGA, ...) would claim any bytes: they cannot identify a file.
        if accept is not None and accept(prefix) is True:
            return name
    return None


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP RIFF header, or None when ``data`` is not WebP or too short to say."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def draft_scale(size: tuple[int, int], target_size: int) -> int:
    """The JPEG DCT scale (1, 2, 4 or 8) that keeps the shorter side ≥ ``DRAFT_MARGIN × target_size``."""
    width, height = size
    for scale in (8, 4, 2):
        # libjpeg rounds a partial last block up to a whole output pixel, which stretches the drafted image by
        # up to half a pixel against the full decode: a visible shift at sharp edges (max |Δ| 0.65 on retina
        # 1411² vs 0.035 on the same photo cropped to 1410²). So only exact divisors are used.
        if width % scale == 0 and height % scale == 0 and min(size) / scale >= DRAFT_MARGIN * target_size:
            return scale
    return 1


def _draft(image: Image.Image, target_size: int) -> None:
    if image.format not in _JPEG_FORMATS:
        return
    scale = draft_scale(image.size, target_size)
    if scale > 1:
        width, height = image.size
        # Pillow picks the largest power of two ≤ min(W // w, H // h); asking for ⌊W/s⌋×⌊H/s⌋ gives exactly s.
        image.draft("RGB", (width // scale, height // scale))


def _exif_transpose(image: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (*_DECODE_ERRORS, KeyError) as err:
        # A broken EXIF block should not cost the user a prediction: keep the stored orientation.
        logger.debug("ignoring unreadable EXIF orientation: %s", err)
