"""The recipe's training augmentations (timm's), each driven by an explicit ``numpy.random.Generator``.

Per image: RandomResizedCrop (bicubic) → horizontal flip → RandAugment → normalise → random erasing.
Per batch: mixup / cutmix with label smoothing → soft targets.

Why not ``mindspore.dataset.vision.RandAugment``: it is torchvision's policy (``num_ops``, ``magnitude``,
``num_magnitude_bins``), which cannot express ``rand-m9-mstd0.5-inc1``: it has no magnitude noise
(``mstd0.5``), a different op set (Identity instead of Invert and SolarizeAdd), absolute-pixel translation,
and no per-op probability (timm applies each chosen op with p = 0.5). Its random state is also internal to
the C++ op, shared by the pipeline's workers, so a resumed run could not redraw the same augmentations.
Here every draw comes from a generator seeded by (run seed, epoch, sample index), so augmentation is exact
under resume, independent of worker count, and identical across data-parallel layouts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vitserve.training.config import AugmentConfig
from vitserve.vit.config import DataConfig

_FILL = (124, 116, 104)  # timm's fill for uncovered pixels: the ImageNet mean in 0..255
_MAX_LEVEL = 10.0

Op = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BICUBIC, fillcolor=_FILL)


def _enhance(kind: type) -> Op:
    # "Increasing" variant: the factor moves away from 1 as the magnitude grows, in a random direction.
    return lambda img, m, rng: kind(img).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9, rng))


def _posterize_increasing(img: Image.Image, m: float, rng: np.random.Generator) -> Image.Image:
    bits = 4 - int(m / _MAX_LEVEL * 4)
    # At the top magnitude timm asks for 0 bits, which Pillow >= 10 refuses; keeping 0 bits is all black.
    return ImageOps.posterize(img, bits) if bits > 0 else Image.new(img.mode, img.size)


def _solarize_add(img: Image.Image, m: float, rng: np.random.Generator) -> Image.Image:
    add = int(m / _MAX_LEVEL * 110)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


# timm's _RAND_INCREASING_TRANSFORMS with its level functions (``inc1``).
RAND_OPS: dict[str, Op] = {
    "AutoContrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng: ImageOps.equalize(img),
    "Invert": lambda img, m, rng: ImageOps.invert(img),
    "Rotate": lambda img, m, rng: img.rotate(
        _signed(m / _MAX_LEVEL * 30.0, rng), resample=Image.Resampling.BICUBIC, fillcolor=_FILL
    ),
    "PosterizeIncreasing": _posterize_increasing,
    "SolarizeIncreasing": lambda img, m, rng: ImageOps.solarize(img, 256 - int(m / _MAX_LEVEL * 256)),
    "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _enhance(ImageEnhance.Color),
    "ContrastIncreasing": _enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda img, m, rng: _affine(img, (1, _signed(m / _MAX_LEVEL * 0.3, rng), 0, 0, 1, 0)),
    "ShearY": lambda img, m, rng: _affine(img, (1, 0, 0, _signed(m / _MAX_LEVEL * 0.3, rng), 1, 0)),
    "TranslateXRel": lambda img, m, rng: _affine(
        img, (1, 0, _signed(m / _MAX_LEVEL * 0.45, rng) * img.size[0], 0, 1, 0)
    ),
    "TranslateYRel": lambda img, m, rng: _affine(
        img, (1, 0, 0, 0, 1, _signed(m / _MAX_LEVEL * 0.45, rng) * img.size[1])
    ),
}


@dataclass(frozen=True)
class RandAugmentPolicy:
    """timm's ``rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc1`` with per-op probability 0.5."""

    magnitude: float = 9.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    prob: float = 0.5

    @classmethod
    def parse(cls, spec: str) -> RandAugmentPolicy:
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment policy must start with 'rand', got {spec!r}")
        values: dict[str, float] = {}
        for part in parts[1:]:
            match = re.fullmatch(r"(mstd|inc|m|n|p)([\d.]+)", part)
            if not match:
                raise ValueError(f"unknown RandAugment option {part!r} in {spec!r}")
            values[match.group(1)] = float(match.group(2))
        if values.get("inc", 1) != 1:
            raise ValueError(f"only the increasing-severity ops (inc1) are implemented, got {spec!r}")
        return cls(
            magnitude=values.get("m", 9.0),
            num_ops=int(values.get("n", 2)),
            magnitude_std=values.get("mstd", 0.0),
            prob=values.get("p", 0.5),
        )

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        names = list(RAND_OPS)
        for index in rng.integers(0, len(names), size=self.num_ops):
            if rng.random() > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = float(rng.normal(magnitude, self.magnitude_std))
            img = RAND_OPS[names[index]](img, min(max(magnitude, 0.0), _MAX_LEVEL), rng)
        return img


def random_resized_crop(
    img: Image.Image, size: int, rng: np.random.Generator, *, scale: tuple[float, float], ratio: tuple[float, float]
) -> Image.Image:
    """torchvision's RandomResizedCrop: a random area fraction and aspect ratio, bicubic-resized to size²."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            break
    else:  # fall back to a centre crop at the nearest allowed ratio
        in_ratio = width / height
        w, h = (
            (width, round(width / min(ratio)))
            if in_ratio < min(ratio)
            else ((round(height * max(ratio)), height) if in_ratio > max(ratio) else (width, height))
        )
        top, left = (height - h) // 2, (width - w) // 2
    box = (left, top, left + w, top + h)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def random_erasing(x: np.ndarray, rng: np.random.Generator, *, prob: float) -> np.ndarray:
    """timm's RandomErasing (mode 'pixel', one box): with ``prob``, fill a box of 2–33 % of the area and
    aspect ratio 0.3–3.3 with standard-normal noise. ``x`` (C, H, W) normalised float32, changed in place."""
    if rng.random() >= prob:
        return x
    channels, height, width = x.shape
    for _ in range(10):
        target_area = rng.uniform(0.02, 1 / 3) * height * width
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h = round(math.sqrt(target_area * aspect))
        w = round(math.sqrt(target_area / aspect))
        if 0 < w < width and 0 < h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            x[:, top : top + h, left : left + w] = rng.standard_normal((channels, h, w), dtype=np.float32)
            break
    return x


def normalize(img: Image.Image, data: DataConfig) -> np.ndarray:
    """RGB PIL image → (3, H, W) float32, scaled to [0, 1] then standardised with the card's mean/std."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def train_transform(img: Image.Image, aug: AugmentConfig, data: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """One training image: RGB PIL image → (3, img_size, img_size) float32, augmented per ``aug``."""
    size = data.img_size
    if aug.random_resized_crop:
        img = random_resized_crop(img, size, rng, scale=aug.scale, ratio=aug.ratio)
    else:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    if aug.hflip > 0 and rng.random() < aug.hflip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.randaugment:
        img = RandAugmentPolicy.parse(aug.randaugment)(img, rng)
    x = normalize(img, data)
    return random_erasing(x, rng, prob=aug.reprob) if aug.reprob > 0 else x


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """(B,) int → (B, C) float32: ``1 − smoothing + smoothing/C`` on the label, ``smoothing/C`` elsewhere."""
    off = smoothing / num_classes
    target = np.full((len(labels), num_classes), off, np.float32)
    target[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return target


def mix_batch(
    images: np.ndarray, labels: np.ndarray, num_classes: int, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """timm's Mixup in 'batch' mode: (B, C, H, W), (B,) → mixed images and (B, num_classes) soft targets.

    Each image is mixed with the batch's reverse; mixup blends whole images with λ ~ Beta(mixup, mixup);
    cutmix pastes a box of area 1 − λ (λ ~ Beta(cutmix, cutmix), then corrected to the clipped box).
    Targets are ``λ·smooth(y) + (1 − λ)·smooth(reversed y)``: every row sums to 1.
    """
    lam, use_cutmix = 1.0, False
    if aug.mixes and rng.random() < aug.mixup_prob:
        use_cutmix = aug.cutmix > 0 and (aug.mixup <= 0 or rng.random() < aug.switch_prob)
        alpha = aug.cutmix if use_cutmix else aug.mixup
        lam = float(rng.beta(alpha, alpha))
    images = images.copy()
    flipped = images[::-1].copy()
    if use_cutmix:
        height, width = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        images[:, :, y0:y1, x0:x1] = flipped[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    elif lam < 1.0:
        images = (images * lam + flipped * (1.0 - lam)).astype(np.float32)
    one_hot = smooth_one_hot(labels, num_classes, aug.smoothing)
    return images, (lam * one_hot + (1.0 - lam) * one_hot[::-1]).astype(np.float32)
