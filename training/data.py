"""ImageFolder data sets (``root/<class>/<image>``) fed through ``mindspore.dataset`` with parallel decode.

Class indices are the sorted class-folder names. Unreadable images are found up front by a parallel full
decode and reported by path and reason: the run fails listing them (``on_corrupt="fail"``) or skips them
with a warning (``"skip"``), rather than crashing later deep in a pipeline worker.

Every random draw of a training sample comes from ``default_rng([seed, epoch, sample_index])`` and the epoch's
order from ``default_rng([seed, epoch])``: batches are a pure function of (seed, epoch, position), so resume
is exact, the worker count changes nothing, and data-parallel ranks together see exactly the global batch a
single worker would.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mindspore.dataset as msd
import numpy as np

from vitserve.training.augment import train_transform
from vitserve.training.config import AugmentConfig, OnCorrupt
from vitserve.vit.config import DataConfig
from vitserve.vit.decode import IMAGE_EXTENSIONS
from vitserve.vit.preprocess import load_image, transform

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data set cannot be used; the message names the folder or files and why."""


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


class CorruptImages(DataError):
    def __init__(self, root: Path, bad: list[BadFile]) -> None:
        self.bad = bad
        listing = "; ".join(f"{b.path}: {b.reason}" for b in bad[:20])
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        super().__init__(f"{len(bad)} unreadable image(s) in {root}: {listing}{more}")


@dataclass(frozen=True)
class ImageFolder:
    """An indexed image folder: ``samples[i] = (path, class_index)``, ``classes[class_index]`` = folder name."""

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    skipped: list[BadFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.samples], np.int32)


def scan_image_folder(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    on_corrupt: OnCorrupt = "fail",
    check: bool = True,
    workers: int = 4,
) -> ImageFolder:
    """Index ``root/<class>/<image>``; with ``classes``, the folder must hold exactly those class folders.

    ``check`` decodes every image (in ``workers`` threads) to find unreadable ones before training starts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None and sorted(classes) != found:
        raise DataError(f"{root}: class folders {found} differ from the expected classes {sorted(classes)}")
    class_list = list(classes) if classes is not None else found
    if not class_list:
        raise DataError(f"{root}: no class folders (expected root/<class>/<image>)")
    samples = [
        (str(path), index)
        for index, name in enumerate(class_list)
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not samples:
        raise DataError(f"{root}: no images with extensions {sorted(IMAGE_EXTENSIONS)}")
    bad = check_images([path for path, _ in samples], workers=workers) if check else []
    if bad and on_corrupt == "fail":
        raise CorruptImages(root, bad)
    for item in bad:
        log.warning("skipping unreadable image %s: %s", item.path, item.reason)
    bad_paths = {b.path for b in bad}
    return ImageFolder(root, class_list, [s for s in samples if s[0] not in bad_paths], bad)


def _check_one(path: str) -> BadFile | None:
    try:
        load_image(path)  # the same guarded decode the training and eval pipelines use
    except Exception as err:  # the ImageError family, and whatever else a broken file makes Pillow raise
        return BadFile(path, f"{type(err).__name__}: {err}")
    return None


def check_images(paths: Sequence[str], *, workers: int = 4) -> list[BadFile]:
    """Fully decode each file (Pillow releases the GIL: threads decode in parallel); the unreadable ones."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [bad for bad in pool.map(_check_one, paths) if bad is not None]


def file_list_sha256(folder: ImageFolder) -> str:
    """sha256 of the sorted ``class/relative-path`` list: identifies which files a model was trained on."""
    names = sorted(str(Path(path).relative_to(folder.root)) for path, _ in folder.samples)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


class _TrainSource:
    """Random-access source: position i → (augmented image (3, S, S) float32, label int32)."""

    def __init__(
        self, folder: ImageFolder, indices: np.ndarray, *, seed: int, epoch: int, aug: AugmentConfig, data: DataConfig
    ) -> None:
        self.folder, self.indices, self.seed, self.epoch = folder, indices, seed, epoch
        self.aug, self.data = aug, data

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        index = int(self.indices[i])
        path, label = self.folder.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            image = train_transform(load_image(path), self.aug, self.data, rng)
        except Exception as err:
            raise DataError(f"training image {path} failed to decode or augment: {err}") from err
        return image, np.int32(label)


class _EvalSource:
    """Random-access source: position i → (eval-preprocessed image (3, S, S) float32, label int32)."""

    def __init__(self, folder: ImageFolder, data: DataConfig) -> None:
        self.folder, self.data = folder, data

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        path, label = self.folder.samples[i]
        try:
            image = transform(load_image(path), self.data)
        except Exception as err:
            raise DataError(f"cannot read image {path}: {err}") from err
        return image.astype(np.float32), np.int32(label)


def epoch_order(num_samples: int, *, seed: int, epoch: int, global_batch: int) -> np.ndarray:
    """(steps_per_epoch, global_batch) sample indices of one epoch; the remainder is dropped (training)."""
    steps = num_samples // global_batch
    if steps == 0:
        raise DataError(f"{num_samples} training images cannot fill one global batch of {global_batch}")
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return perm[: steps * global_batch].reshape(steps, global_batch)


def _iterate(source: object, batch_size: int, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    dataset = msd.GeneratorDataset(
        source,
        column_names=["image", "label"],
        shuffle=False,
        num_parallel_workers=max(1, min(workers, os.cpu_count() or 1)),  # mindspore.dataset refuses more
        python_multiprocessing=False,  # threads: decode and resize release the GIL; no fork of MindSpore
    )
    dataset = dataset.batch(batch_size, drop_remainder=False)
    for row in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield row[0], row[1]  # the iterator yields [images, labels] lists


def train_batches(
    folder: ImageFolder,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    aug: AugmentConfig,
    data: DataConfig,
    workers: int = 4,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This rank's (images (B, 3, S, S) float32, labels (B,) int32) batches of ``epoch`` from ``start_step``.

    Global batch g holds ``epoch_order(...)[g]``; rank r takes its slice ``[r·B, (r+1)·B)`` (the sharding
    that ``num_shards``/``shard_id`` would do, made explicit so that 1 and N workers see the same batches).
    """
    order = epoch_order(len(folder), seed=seed, epoch=epoch, global_batch=batch_size * world_size)
    indices = order[start_step:, rank * batch_size : (rank + 1) * batch_size].reshape(-1)
    if len(indices) == 0:
        return
    source = _TrainSource(folder, indices, seed=seed, epoch=epoch, aug=aug, data=data)
    yield from _iterate(source, batch_size, workers)


def eval_batches(
    folder: ImageFolder, data: DataConfig, *, batch_size: int, workers: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every image in folder order, eval-preprocessed; the last batch may be smaller (nothing is dropped)."""
    yield from _iterate(_EvalSource(folder, data), batch_size, workers)
