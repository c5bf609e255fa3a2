"""The model card: everything needed to rebuild, trust and describe one stored version (``card.json``)."""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitserve.vit.config import DataConfig, ViTConfig

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.ckpt"
CACHE_DIR = "cache"  # derived artefacts (exports, compiled graphs): ModelStore.cache_dir
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Every character that ends a line for some reader (Python's splitlines, Triton's label file, a terminal): the
# C0/C1 controls with DEL (category Cc: \n, \r, \t, \x00, \x85, ...) and the Unicode line/paragraph separators.
_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


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
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one preprocessed image: what every engine of this version takes, batched."""
        return (self.config.in_chans, self.config.img_size, self.config.img_size)

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
        values["labels"] = check_labels(raw["labels"])
        values["weights"] = check_weights_name(raw.get("weights", WEIGHTS_FILE))
        values["sha256"] = check_sha256(raw.get("sha256"))
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


def check_labels(labels: object) -> list[str]:
    """``labels`` if it is a list of strings none of which holds a control character, else a ``ValueError``
    naming the first bad one: each label becomes one line of a Triton ``labels.txt``, and a newline in one
    would shift every class after it."""
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be a list of strings, got {type(labels).__name__} {str(labels)[:80]!r}")
    for index, label in enumerate(labels):
        bad = next((c for c in label if unicodedata.category(c) in _LINE_BREAKING), None)
        if bad is not None:
            raise ValueError(f"label {index} {label!r} holds the control character {bad!r}")
    return labels


def check_weights_name(name: object) -> str:
    """``name`` if it is a plain file name (the weights live directly in the version's directory), else a
    ``ValueError``: no separator, not absolute, not ``.`` or ``..``, no control character."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or any(unicodedata.category(c) in _LINE_BREAKING for c in name)
    ):
        raise ValueError(f"the weights must be a file name inside the version's directory, got {name!r}")
    return name


def check_sha256(digest: object) -> str:
    """``digest`` if it is a sha256 hex digest (64 lower-case hex digits), else a ``ValueError``: it names the
    version's cached exports, so it must never hold a path."""
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ValueError(f"the weights' sha256 must be 64 lower-case hex digits, got {str(digest)[:80]!r}")
    return digest


def read_card(path: Path) -> Card:
    """Parse a ``card.json``; a damaged card is a ``ValueError`` naming the file."""
    try:
        return Card.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read model card {path}: {err}") from err
