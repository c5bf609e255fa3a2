"""The model card: everything needed to rebuild, trust and describe one stored version (``card.json``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitserve.vit.config import DataConfig, ViTConfig

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.ckpt"
CACHE_DIR = "cache"  # derived artefacts (exports, compiled graphs): ModelStore.cache_dir


@dataclass(frozen=True)
class Card:
    """One version's metadata. ``labels[i]`` names class index ``i`` (names may repeat: keep the index)."""

    name: str
    version: int
    config: ViTConfig  # architecture: the weights' shapes must match it
    data: DataConfig  # preprocessing the weights were trained with
    labels: list[str]
    weights: str = WEIGHTS_FILE  # file name inside the version directory
    sha256: str = ""  # hex digest of the weights file
    lineage: dict[str, Any] = field(default_factory=dict)  # e.g. converted from which file / trained from what
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset name → {"top1": ..., ...}
    created_at: str = ""  # ISO 8601, UTC
    description: str = ""
    # How the version asks to be served, e.g. {"precision": "int8"} (``ModelStore.set_serving`` checks the values).
    serving: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name:version``, the reference that always names exactly this version."""
        return f"{self.name}:{self.version}"

    def replace(self, **changes: Any) -> Card:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        raw = {
            "name": self.name,
            "version": self.version,
            "config": self.config.to_dict(),
            "data": self.data.to_dict(),
            "labels": list(self.labels),
            "weights": self.weights,
            "sha256": self.sha256,
            "lineage": self.lineage,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "description": self.description,
        }
        if self.serving:  # written only when set: a card without it stays readable by releases that predate it
            raw["serving"] = dict(self.serving)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Card:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown card field(s): {', '.join(unknown)}")
        values = dict(raw)
        values["config"] = ViTConfig.from_dict(raw["config"])
        values["data"] = DataConfig.from_dict(raw["data"])
        values["version"] = int(raw["version"])
        serving = raw.get("serving", {})
        if not isinstance(serving, dict):
            raise ValueError(f"card field serving must be an object, got {type(serving).__name__}")
        values["serving"] = {str(k): str(v) for k, v in serving.items()}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Card:
        return cls.from_dict(json.loads(text))


def read_card(path: Path) -> Card:
    """Parse a ``card.json``; a damaged card is a ``ValueError`` naming the file."""
    try:
        return Card.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read model card {path}: {err}") from err
