"""transform/preprocess against timm's eval transform (an independent implementation on torchvision)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.torch_compat import import_timm
from tests.vit.photos import encode, photo
from vitserve.vit.config import INCEPTION_DATA, DataConfig
from vitserve.vit.decode import DecodeLimits
from vitserve.vit.image_errors import ImageTooLarge, InvalidImage
from vitserve.vit.preprocess import ImageSource, load_image, preprocess, resized_size, transform

# transform() and timm call the same Pillow resize; the rest is float32 arithmetic done in a different order.
TIMM_ATOL = 1e-5

CONFIGS = {
    "imagenet_224": DataConfig(),
    "imagenet_384": DataConfig(img_size=384),
    "inception_224": INCEPTION_DATA,
    "bilinear_160": DataConfig(img_size=160, crop_pct=0.95, interpolation="bilinear"),
}


@cache
def timm_transform(cfg: DataConfig) -> Callable[[Image.Image], np.ndarray]:
    timm = import_timm()
    pipeline = timm.data.create_transform(
        input_size=cfg.img_size,
        crop_pct=cfg.crop_pct,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        is_training=False,
    )
    return lambda image: pipeline(image).numpy()


def test_resize_size_follows_crop_pct() -> None:
    assert DataConfig(img_size=224).resize_size == 256
    assert DataConfig(img_size=384).resize_size == int(384 / 0.875) == 438  # the seed hard-coded 256
    assert INCEPTION_DATA.resize_size == 248


def test_resized_size_truncates_the_longer_side() -> None:
    assert resized_size((451, 300), 256) == (384, 256)  # 256 × 451 / 300 = 384.85
    assert resized_size((300, 451), 256) == (256, 384)
    assert resized_size((512, 512), 438) == (438, 438)


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "chelsea_portrait", "odd_crop"])
def test_transform_matches_timm_eval_transform(name: str, cfg_name: str) -> None:
    cfg = CONFIGS[cfg_name]
    if name == "chelsea_portrait":
        array = np.ascontiguousarray(photo("chelsea").transpose(1, 0, 2))
    elif name == "odd_crop":
        array = photo("coffee")[:333, :517]  # odd sizes exercise the half-pixel crop rounding
    else:
        array = photo(name)
    image = Image.fromarray(array)
    out = transform(image, cfg)
    assert out.shape == (3, cfg.img_size, cfg.img_size)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, timm_transform(cfg)(image), rtol=0, atol=TIMM_ATOL)


def test_numpy_reference_for_crop_and_normalise() -> None:
    # Independent of any resize: an image already at resize_size is only cropped and normalised.
    cfg = DataConfig(img_size=224)
    array = photo("astronaut")[:256, 100:400]  # 256 high, 300 wide: its shorter side is already 256
    out = transform(Image.fromarray(array), cfg)
    left = round((300 - 224) / 2)
    top = round((256 - 224) / 2)
    crop = array[top : top + 224, left : left + 224].astype(np.float64) / 255.0
    expected = ((crop - cfg.mean) / cfg.std).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_preprocess_accepts_every_source_type(tmp_path: Path) -> None:
    cfg = DataConfig(img_size=224)
    rgb = photo("chelsea")
    path = tmp_path / "chelsea.png"
    path.write_bytes(encode(rgb, "PNG"))
    luma = rgb[..., 0].copy()
    sources: list[ImageSource] = [path, str(path), encode(rgb, "PNG"), Image.fromarray(rgb), rgb, luma, luma[..., None]]
    batch = preprocess(sources, cfg)
    assert batch.shape == (7, 3, 224, 224) and batch.dtype == np.float32
    expected = timm_transform(cfg)(Image.fromarray(rgb))
    for row in batch[:5]:
        np.testing.assert_allclose(row, expected, rtol=0, atol=TIMM_ATOL)
    gray_expected = timm_transform(cfg)(Image.fromarray(np.repeat(luma[..., None], 3, axis=2)))
    np.testing.assert_allclose(batch[5], gray_expected, rtol=0, atol=TIMM_ATOL)
    np.testing.assert_array_equal(batch[6], batch[5])


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_preprocess_of_each_mode_matches_timm_on_the_reference_rgb(mode: str) -> None:
    cfg = DataConfig()
    rgb = photo("coffee")
    image = Image.fromarray(rgb)
    if mode == "I;16":
        source = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
        reference = image.convert("L").convert("RGB")
    elif mode == "RGBA":
        source = image.convert("RGBA")
        source.putalpha(255)
        reference = image
    else:
        source = image.convert(mode)
        reference = source.convert("RGB")
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = preprocess([encode(source, fmt)], cfg)[0]
    np.testing.assert_allclose(out, timm_transform(cfg)(reference), rtol=0, atol=TIMM_ATOL)


def test_preprocess_of_empty_batch() -> None:
    assert preprocess([], DataConfig(img_size=32)).shape == (0, 3, 32, 32)


def test_load_image_leaves_the_callers_image_alone() -> None:
    image = Image.fromarray(photo("chelsea")).convert("RGBA")
    exif = image.getexif()
    exif[0x0112] = 6
    image.info["exif"] = exif.tobytes()
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (300, 451)  # rotated per EXIF
    assert image.mode == "RGBA" and image.size == (451, 300)


def test_load_image_errors(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(encode(photo("chelsea"), "PNG"))
    with pytest.raises(ImageTooLarge):
        load_image(big, limits=DecodeLimits(max_bytes=1000))
    with pytest.raises(InvalidImage, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InvalidImage, match="uint8"):
        load_image(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InvalidImage, match="got"):
        load_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB"):
        transform(Image.new("L", (8, 8)), DataConfig(img_size=8))
