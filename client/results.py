"""What the service answers, as frozen dataclasses (parsed from ``/classify`` and ``/models`` JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int  # the class's index in the model's head
    score: float  # softmax probability


@dataclass(frozen=True)
class Timings:
    """Milliseconds per stage for one image; ``fetch_ms`` only for URL inputs."""

    decode_ms: float
    queue_ms: float
    infer_ms: float
    batch_size: int  # images in the model call this image was part of
    fetch_ms: float | None = None
    cache: str | None = None  # "hit" or "shared" when the duplicate-image cache answered (models that opt in)

    @classmethod
    def from_json(cls, timings: dict[str, Any]) -> Timings:
        """The fields this client knows; a newer server's others are ignored, not an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in timings.items() if k in known})


@dataclass(frozen=True)
class ImageResult:
    predictions: list[Prediction]  # best first
    timings: Timings


@dataclass(frozen=True)
class Classification:
    """One classify request's answer: one ``ImageResult`` per image, in input order."""

    model: str
    version: int
    results: list[ImageResult]
    total_ms: float

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Classification:
        results = [
            ImageResult(
                predictions=[Prediction(p["label"], int(p["index"]), float(p["score"])) for p in r["predictions"]],
                timings=Timings.from_json(r["timings"]),
            )
            for r in body["results"]
        ]
        return cls(body["model"]["name"], int(body["model"]["version"]), results, float(body["total_ms"]))


@dataclass(frozen=True)
class VersionInfo:
    version: int
    aliases: list[str]
    loaded: bool
    serving: bool
    ready: bool
    num_classes: int
    img_size: int
    created_at: str
    description: str
    metrics: dict[str, dict[str, float]]
    load_error: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    serving_version: int | None
    aliases: dict[str, int]
    versions: list[VersionInfo]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelInfo:
        known = set(VersionInfo.__dataclass_fields__)
        versions = [VersionInfo(**{k: v for k, v in item.items() if k in known}) for item in body["versions"]]
        return cls(body["name"], body.get("serving_version"), dict(body.get("aliases", {})), versions)
