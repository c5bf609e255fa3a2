"""``TrainConfig``: one training run's recipe, loaded from a YAML file.

The shipped ``configs/vit_base_p16_224_100ep.yaml`` is the seed's MAE fine-tuning recipe (docs/model.md,
"Training recipe"); ``configs/digits.yaml`` trains the small embedded default model from scratch. Defaults
are stated once, here; the YAML files only say what they change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vitserve.vit.config import known_fields

CONFIG_DIR = Path(__file__).parent / "configs"

OnCorrupt = Literal["skip", "fail"]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations (timm's names). Each one is switched off by its zero/None value."""

    random_resized_crop: bool = True  # else the eval transform (resize + centre crop)
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect-ratio range
    hflip: float = 0.5  # probability of a horizontal flip
    randaugment: str | None = "rand-m9-mstd0.5-inc1"  # timm's policy string; None switches it off
    reprob: float = 0.25  # random-erasing probability (per image, one box, per-pixel normal noise)
    mixup: float = 0.8  # mixup Beta(alpha, alpha); 0 switches it off
    cutmix: float = 1.0  # cutmix Beta(alpha, alpha); 0 switches it off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # when both are on, probability of cutmix instead of mixup
    smoothing: float = 0.1  # label smoothing folded into the soft targets

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "ratio", tuple(float(v) for v in self.ratio))
        for name in ("hflip", "reprob", "mixup_prob", "switch_prob", "smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError(f"augment.mixup/cutmix must be >= 0, got {self.mixup}/{self.cutmix}")

    @property
    def mixes(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


@dataclass(frozen=True)
class TrainConfig:
    """A training run. ``model`` names a variant (from scratch) unless ``init_from`` names a store version."""

    # --- model ---
    model: str = "vit_base_p16"  # a variant name from vit.config (the seed's alias accepted)
    model_args: dict[str, Any] = field(default_factory=dict)  # ViTConfig overrides (img_size, depth, ...)
    init_from: str | None = None  # store reference to fine-tune from (name, name:3, name@alias)
    data_args: dict[str, Any] = field(default_factory=dict)  # DataConfig overrides (crop_pct, mean, std)
    # --- data ---
    train_dir: str | None = None  # ImageFolder root: <class>/<image>
    val_dir: str | None = None  # ImageFolder root with the same class folders
    val_name: str | None = None  # the validation set's name in the card's metrics (default: folder name)
    num_workers: int = 4  # parallel decode/augment workers in the mindspore.dataset pipeline
    on_corrupt: OnCorrupt = "fail"  # unreadable images: fail the run listing them, or skip them with a warning
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # --- optimisation (docs/model.md, "Training recipe") ---
    epochs: int = 100
    warmup_epochs: float = 5.0
    batch_size: int = 32  # per device; the global batch is batch_size × world size
    base_lr: float = 5e-4  # scaled: peak lr = base_lr × global batch / 256 (unless lr is set)
    lr: float | None = None  # absolute peak lr, overriding the scaling rule
    min_lr: float = 1e-6  # the cosine ends here
    weight_decay: float = 0.05  # not on biases, norms, pos_embed, cls_token
    layer_decay: float = 0.65  # layer-wise lr decay; 1.0 switches it off
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    drop_path_rate: float = 0.1  # stochastic depth at the last block (overrides the variant's)
    loss_scale: float = 1.0  # static loss scale for float16 compute; 1.0 in float32
    # --- run ---
    seed: int = 0  # every random draw (init, shuffling, augmentation, drop-path) derives from it
    max_steps: int | None = None  # stop after this many steps (None: all epochs)
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0: at each epoch end
    eval_every: int = 1  # epochs between validations (the best one is published)
    log_every: int = 10  # steps between metrics-log lines
    eval_batch_size: int = 64
    output_dir: str = "runs"  # run directories are created under it
    name: str | None = None  # model name in the store (default: the run's name)
    description: str = ""  # first line of the published card's description
    aliases: tuple[str, ...] = ()  # aliases the published version gets

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**known_fields(AugmentConfig, self.augment, "augment")))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        errors = []
        if self.epochs <= 0 or self.batch_size <= 0 or self.eval_batch_size <= 0:
            errors.append("epochs, batch_size and eval_batch_size must be > 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            errors.append(f"warmup_epochs ({self.warmup_epochs}) must be in [0, epochs]")
        if not 0.0 < self.layer_decay <= 1.0:
            errors.append(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.on_corrupt not in ("skip", "fail"):
            errors.append(f"on_corrupt must be 'skip' or 'fail', got {self.on_corrupt!r}")
        if self.loss_scale <= 0 or self.num_workers <= 0:
            errors.append("loss_scale and num_workers must be > 0")
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def peak_lr(self, global_batch: int) -> float:
        """The lr at the end of warm-up: ``lr`` if set, else ``base_lr × global_batch / 256`` (MAE's rule)."""
        return self.lr if self.lr is not None else self.base_lr * global_batch / 256

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"], data["aliases"] = list(self.betas), list(self.aliases)
        data["augment"]["scale"], data["augment"]["ratio"] = list(self.augment.scale), list(self.augment.ratio)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**known_fields(cls, data, "TrainConfig"))


def load_config(path_or_name: str | Path) -> TrainConfig:
    """Read a YAML config: a file path, or the name of a shipped one (``digits``, ``vit_base_p16_224_100ep``)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = CONFIG_DIR / f"{path.stem}.yaml"
        if not shipped.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"no config file {str(path_or_name)!r} (shipped configs: {known})")
        path = shipped
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config is a YAML mapping, got {type(data).__name__}")
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
