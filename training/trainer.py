"""The training loop: data → compiled step → checkpoints, validation, metrics log → publish the best.

``train(config, ...)`` runs one rank of a run (one process when ``world_size`` is 1). Only rank 0 writes
(checkpoints, metrics log, the store); every rank computes the same schedule and the same global batches.
Randomness is counter-based (seed, epoch, step, sample index), so ``resume=RUN_DIR`` continues exactly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mindspore import Tensor, nn
from tqdm import tqdm

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.figures import confusion_path
from vitserve.training.augment import mix_batch, smooth_one_hot
from vitserve.training.checkpointing import RunState, load_training_checkpoint, restore_state, save_training_checkpoint
from vitserve.training.config import TrainConfig
from vitserve.training.data import ImageFolder, file_list_sha256, scan_image_folder, train_batches
from vitserve.training.evaluate import EvalResult, evaluate_folder, plot_confusion
from vitserve.training.model_init import InitialModel, initial_model
from vitserve.training.optim import build_optimizer
from vitserve.training.schedule import cosine_schedule
from vitserve.training.step import TrainNetwork, drop_path_masks, make_train_step
from vitserve.vit.checkpoint import load_checkpoint_file, save_checkpoint, state_dict
from vitserve.vit.model import VisionTransformer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.ckpt"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    state: RunState
    best: dict[str, float] | None  # validation metrics of the published weights
    card: Card | None  # the published version (rank 0 with publish=True)
    images_per_s: float  # global training throughput, compilation excluded
    model: VisionTransformer  # the final weights (the published ones are the best validated)


def train(
    config: TrainConfig,
    *,
    store: ModelStore | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    publish: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> TrainResult:
    """Run (or, with ``resume=RUN_DIR``, continue) training; returns where it ended and what it published.

    ``world_size`` > 1 needs ``mindspore.communication.init()`` done by the entry point (``distributed.py``).
    On resume the run's saved config is used, except ``max_steps`` which may extend or cut it.
    """
    if resume is not None:
        run_dir = Path(resume)
        saved = TrainConfig.from_dict(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
        config = saved.replace(max_steps=config.max_steps)
    run = _Run(config, store, _run_dir(config, run_dir), rank, world_size)
    if resume is not None:
        run.restore()
    return run.fit(publish=publish)


def _scan_data(config: TrainConfig) -> tuple[ImageFolder, ImageFolder | None]:
    """The training folder and, when configured, the validation folder with the same classes."""
    if config.train_dir is None:
        raise ValueError("the training config has no train_dir (set it, or pass --data)")
    train_set = scan_image_folder(config.train_dir, on_corrupt=config.on_corrupt, workers=config.num_workers)
    if config.val_dir is None:
        return train_set, None
    val_set = scan_image_folder(
        config.val_dir, classes=train_set.classes, on_corrupt=config.on_corrupt, workers=config.num_workers
    )
    return train_set, val_set


def _run_dir(config: TrainConfig, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    name = config.name or Path(config.train_dir or "run").name
    return Path(config.output_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class _Run:
    def __init__(
        self, config: TrainConfig, store: ModelStore | None, run_dir: Path, rank: int, world_size: int
    ) -> None:
        self.config, self.store, self.run_dir = config, store, run_dir
        self.rank, self.world_size = rank, world_size
        self.train_set, self.val_set = _scan_data(config)
        self.init: InitialModel = initial_model(config, len(self.train_set.classes), store)
        self.global_batch = config.batch_size * world_size
        self.steps_per_epoch = len(self.train_set) // self.global_batch
        lr_table = cosine_schedule(
            config.peak_lr(self.global_batch),
            config.min_lr,
            epochs=config.epochs,
            warmup_epochs=config.warmup_epochs,
            steps_per_epoch=max(self.steps_per_epoch, 1),
        )
        self.total_steps = len(lr_table) if config.max_steps is None else min(config.max_steps, len(lr_table))
        model = self.init.model
        model.set_train(False)  # drop-path comes in as masks (step.py); the model's own DropPath stays idle
        self.optimizer = build_optimizer(
            model,
            lr_table,
            depth=self.init.config.depth,
            weight_decay=config.weight_decay,
            layer_decay=config.layer_decay,
            betas=config.betas,
            eps=config.eps,
        )
        reducer = None
        if world_size > 1:
            reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True, degree=world_size)
        self.step_fn = make_train_step(TrainNetwork(model, loss_scale=config.loss_scale), self.optimizer, reducer)
        self.state = RunState(seed=config.seed)
        self.best: dict[str, float] | None = None
        self.best_eval: EvalResult | None = None
        if self.is_writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def restore(self) -> None:
        weights, self.state = load_training_checkpoint(self.run_dir)
        restore_state([self.init.model, self.optimizer], weights)
        best_json = self.run_dir / "best.json"
        if best_json.is_file():
            self.best = json.loads(best_json.read_text())
        log.info(
            "resumed %s at step %d (epoch %d, batch %d)",
            self.run_dir,
            self.state.step,
            self.state.epoch,
            self.state.position,
        )

    def fit(self, *, publish: bool) -> TrainResult:
        config = self.config
        progress = tqdm(total=self.total_steps, initial=self.state.step, disable=not self.is_writer, unit="step")
        timer = _Throughput()
        try:
            while self.state.step < self.total_steps and self.state.epoch < config.epochs:
                self._run_epoch(progress, timer)
        finally:
            progress.close()
        card = self._publish() if publish and self.is_writer and self.store is not None else None
        return TrainResult(self.run_dir, self.state, self.best, card, timer.images_per_s, self.init.model)

    def _run_epoch(self, progress: tqdm, timer: _Throughput) -> None:
        config, state = self.config, self.state
        batches = train_batches(
            self.train_set,
            seed=config.seed,
            epoch=state.epoch,
            batch_size=config.batch_size,
            start_step=state.position,
            rank=self.rank,
            world_size=self.world_size,
            aug=config.augment,
            data=self.init.data,
            workers=config.num_workers,
        )
        for images, labels in batches:
            lr = self.optimizer.current_lr()
            loss = self._step(images, labels)
            timer.tick(self.global_batch, first=timer.count == 0)
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{timer.images_per_s:.1f}")
            if self._after_step(loss, lr, timer.images_per_s):
                break
        if state.step >= self.total_steps and self.val_set is not None and self.best is None:
            self._validate()

    def _after_step(self, loss: float, lr: float, images_per_s: float) -> bool:
        """Advance the run state past one step; log, validate, checkpoint as due. True: leave the epoch."""
        config, state = self.config, self.state
        state.step, state.position = state.step + 1, state.position + 1
        epoch_done = state.position >= self.steps_per_epoch
        if epoch_done:  # the state names the next batch, so a checkpoint here resumes at the next epoch
            state.epoch, state.position = state.epoch + 1, 0
        if state.step % config.log_every == 0 or state.step == self.total_steps:
            self._log({"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "img_s": images_per_s})
        due = state.epoch % config.eval_every == 0 or state.epoch == config.epochs
        if epoch_done and self.val_set is not None and due:
            self._validate()
        if (config.checkpoint_every and state.step % config.checkpoint_every == 0) or (
            epoch_done and not config.checkpoint_every
        ):
            self._checkpoint()
        return epoch_done or state.step >= self.total_steps

    def _step(self, images: np.ndarray, labels: np.ndarray) -> float:
        config, step = self.config, self.state.step
        num_classes = self.init.config.num_classes
        if config.augment.mixes:
            rng = np.random.default_rng([config.seed, step, 2, self.rank])
            images, target = mix_batch(images, labels, num_classes, config.augment, rng)
        else:
            target = smooth_one_hot(labels, num_classes, config.augment.smoothing)
        masks = drop_path_masks(
            self.init.config.depth,
            self.init.config.drop_path_rate,
            seed=config.seed,
            step=step,
            global_batch=self.global_batch,
            rank=self.rank,
            batch_size=config.batch_size,
        )
        loss = self.step_fn(Tensor(images), Tensor(target), Tensor(masks))
        return float(loss.asnumpy())

    def _checkpoint(self) -> None:
        if self.is_writer:
            path = save_training_checkpoint(self.run_dir, [self.init.model, self.optimizer], self.state)
            log.info("checkpoint %s", path)

    def _validate(self) -> None:
        assert self.val_set is not None
        result = evaluate_folder(
            self.init.model,
            self.val_set,
            self.init.data,
            batch_size=self.config.eval_batch_size,
            workers=self.config.num_workers,
        )
        metrics = result.metrics(self.train_set.classes)
        self._log({"step": self.state.step, "epoch": self.state.epoch, "eval": metrics})
        if self.best is None or result.top1 > self.best["top1"]:
            self.best, self.best_eval = metrics, result
            self.state.best_metric, self.state.best_step = result.top1, self.state.step
            if self.is_writer:
                save_checkpoint(state_dict(self.init.model), self.run_dir / BEST_FILE)
                (self.run_dir / "best.json").write_text(json.dumps(metrics, indent=2))

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_writer:
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps({"time": time.time(), **record}) + "\n")

    def _publish(self) -> Card:
        assert self.store is not None
        config = self.config
        best_path = self.run_dir / BEST_FILE
        weights = load_checkpoint_file(best_path) if best_path.is_file() else state_dict(self.init.model)
        val_name = config.val_name or (Path(config.val_dir).name if config.val_dir else None)
        lineage = {
            **self.init.lineage,
            "train_data": str(Path(config.train_dir or "").resolve()),
            "train_files_sha256": file_list_sha256(self.train_set),
            "train_images": len(self.train_set),
            "val_data": str(Path(config.val_dir).resolve()) if config.val_dir else None,
            "steps": self.state.step,
            "best_step": self.state.best_step,
            "world_size": self.world_size,
            "run_dir": str(self.run_dir.resolve()),
            "config": config.to_dict(),
        }
        card = self.store.publish(
            config.name or self.run_dir.name,
            weights,
            self.init.config,
            self.init.data,
            self.train_set.classes,
            lineage=lineage,
            metrics={val_name: self.best} if val_name and self.best else None,
            description=self._description(),
            aliases=config.aliases,
        )
        if self.best_eval is not None and val_name:
            plot_confusion(
                self.best_eval.confusion,
                self.train_set.classes,
                confusion_path(self.store, card, val_name),
                title=f"{card.ref} on {val_name}",
            )
        return card

    def _description(self) -> str:
        """``config.description`` with ``{top1}``, ``{epochs}``, ``{depth}``... filled in from the run."""
        fields: dict[str, Any] = {**self.init.config.to_dict(), **(self.best or {})}
        fields |= {
            "epochs": self.state.epoch,
            "steps": self.state.step,
            "train_images": len(self.train_set),
            "val_images": len(self.val_set) if self.val_set is not None else 0,
        }
        try:
            return self.config.description.format_map(fields)
        except (KeyError, ValueError, IndexError):  # a description with braces of its own stays as written
            return self.config.description


class _Throughput:
    """Images per second over the steps after the first (which includes graph compilation)."""

    def __init__(self) -> None:
        self.count, self.images, self.start = 0, 0, time.perf_counter()

    def tick(self, images: int, *, first: bool) -> None:
        if first:
            self.count, self.images, self.start = 1, 0, time.perf_counter()
            return
        self.count += 1
        self.images += images

    @property
    def images_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if self.images and elapsed > 0 else 0.0


def result_summary(result: TrainResult) -> dict[str, Any]:
    """A JSON-friendly summary of a run (for the CLI)."""
    return {
        "run_dir": str(result.run_dir),
        "state": asdict(result.state),
        "best": {k: v for k, v in (result.best or {}).items() if not k.startswith("class_acc/")},
        "published": result.card.ref if result.card else None,
        "images_per_s": round(result.images_per_s, 2),
    }
