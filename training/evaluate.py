"""Evaluation over every image of an ImageFolder: top-1/top-5, per-class accuracy, a confusion matrix.

Nothing is dropped: the last, smaller batch is padded to the compiled batch size and the padding's outputs
are discarded (MindFormers' 0.8372 silently skipped the 16 images of its last partial batch). Images go
through ``vit.preprocess`` exactly as the service's do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.figures import confusion_path
from vitserve.model_store.pretrained import from_pretrained
from vitserve.runtime.engine import MindSporeEngine
from vitserve.training.config import OnCorrupt
from vitserve.training.data import DataError, ImageFolder, eval_batches, scan_image_folder
from vitserve.vit.config import DataConfig

log = logging.getLogger(__name__)

MAX_PLOTTED_CLASSES = 100  # beyond this a confusion-matrix picture is unreadable; the numbers remain


class _Logits(nn.Cell):
    """The model in eval mode as one compiled graph: (B, 3, S, S) float32 → (B, C) float32."""

    def __init__(self, model: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # keep the model's parameter names (no "model." prefix)
        self.model = model

    @ms.jit
    def construct(self, x: Tensor) -> Tensor:
        return self.model(x)


@dataclass(frozen=True)
class EvalResult:
    """Counts over every image: ``confusion[true, predicted]``; ``predictions`` (N,) top-1 indices in order."""

    num_images: int
    top1: float
    top5: float
    per_class: dict[str, float]  # class name → accuracy (NaN-free: classes without images are left out)
    confusion: np.ndarray
    predictions: np.ndarray
    logits: np.ndarray  # (N, C) float32

    def metrics(self, classes: list[str]) -> dict[str, float]:
        """The card's flat metrics: top1, top5, num_images and ``class_acc/<index>_<name>`` per class."""
        out = {"top1": self.top1, "top5": self.top5, "num_images": float(self.num_images)}
        for index, name in enumerate(classes):
            if name in self.per_class:
                out[f"class_acc/{index}_{name}"] = self.per_class[name]
        return out


def predict_logits(model: nn.Cell, batches: Iterable[np.ndarray], batch_size: int) -> np.ndarray:
    """Logits for every image of ``batches`` (each (b ≤ batch_size, 3, S, S)), through the runtime's engine:
    one compiled graph of ``batch_size`` rows, short batches padded and the padding dropped."""
    model.set_train(False)
    engine: MindSporeEngine | None = None
    outputs = []
    for images in batches:
        if engine is None:
            engine = MindSporeEngine(
                _Logits(model), (batch_size,), image_shape=(images.shape[1], images.shape[2], images.shape[3])
            )
        outputs.append(engine.run(images))
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def score(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> EvalResult:
    """Top-1/top-5 (top-k capped at the class count), per-class accuracy and confusion from logits (N, C)."""
    num = len(labels)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    predictions = topk[:, 0]
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {
        name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(classes) if confusion[i].sum() > 0
    }
    return EvalResult(
        num_images=num,
        top1=float((predictions == labels).mean()) if num else 0.0,
        top5=float((topk == labels[:, None]).any(axis=1).mean()) if num else 0.0,
        per_class=per_class,
        confusion=confusion,
        predictions=predictions,
        logits=logits.astype(np.float32),
    )


def evaluate_folder(
    model: nn.Cell,
    folder: ImageFolder,
    data_config: DataConfig,
    *,
    batch_size: int = 64,
    workers: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on every image of ``folder`` (class indices as in ``folder.classes``);
    ``on_progress(images_in_batch, total_images)`` after each batch is read."""
    labels: list[np.ndarray] = []

    def images() -> Iterable[np.ndarray]:
        for batch, batch_labels in eval_batches(folder, data_config, batch_size=batch_size, workers=workers):
            labels.append(batch_labels)
            if on_progress is not None:
                on_progress(len(batch), len(folder))
            yield batch

    logits = predict_logits(model, images(), batch_size)
    result = score(logits, np.concatenate(labels).astype(np.int64), folder.classes)
    if result.num_images != len(folder):
        raise RuntimeError(f"evaluated {result.num_images} images of {len(folder)} in {folder.root}")
    log.info("evaluated %d images of %s: top-1 %.4f top-5 %.4f", len(folder), folder.root, result.top1, result.top5)
    return result


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, *, title: str = "") -> Path | None:
    """Write the confusion matrix as a PNG (rows: true class, columns: predicted). None above 100 classes."""
    if len(classes) > MAX_PLOTTED_CLASSES:
        log.info("%d classes: no confusion-matrix plot (limit %d)", len(classes), MAX_PLOTTED_CLASSES)
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    size = min(4 + 0.25 * len(classes), 30)
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, classes, rotation=90, fontsize=max(4, 10 - len(classes) // 15))
    axes.set_yticks(ticks, classes, fontsize=max(4, 10 - len(classes) // 15))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(classes) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def folder_for_labels(
    root: str | Path, labels: list[str], *, on_corrupt: OnCorrupt = "fail", workers: int = 4
) -> ImageFolder:
    """Index an eval folder against a model's labels: by name when the class folders are the label names,
    else by sorted folder order when the counts agree (ImageNet's ``n01440764``… folders in index order)."""
    found = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if sorted(labels) == found and len(set(labels)) == len(labels):
        return scan_image_folder(root, classes=labels, on_corrupt=on_corrupt, workers=workers)
    if len(found) == len(labels):
        log.info("%s: class folders are not the model's label names; using sorted folder order", root)
        return scan_image_folder(root, on_corrupt=on_corrupt, workers=workers)
    raise DataError(f"{root} has {len(found)} class folders but the model has {len(labels)} classes")


def evaluate_version(
    store: ModelStore,
    ref: str,
    data_dir: str | Path,
    *,
    dataset_name: str | None = None,
    batch_size: int = 64,
    workers: int = 4,
    on_corrupt: OnCorrupt = "fail",
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Card, EvalResult]:
    """Evaluate store version ``ref`` on ``data_dir`` and record the metrics (and a confusion PNG next to
    the version) in its card under ``dataset_name`` (default: the folder's name)."""
    pretrained = from_pretrained(ref, store=store)
    card = pretrained.card
    folder = folder_for_labels(data_dir, card.labels, on_corrupt=on_corrupt, workers=workers)
    result = evaluate_folder(
        pretrained.model, folder, card.data, batch_size=batch_size, workers=workers, on_progress=on_progress
    )
    name = dataset_name or Path(data_dir).resolve().name
    card = store.record_metrics(card.ref, name, result.metrics(card.labels))
    plot_confusion(result.confusion, card.labels, confusion_path(store, card, name), title=f"{card.ref} on {name}")
    return card, result
