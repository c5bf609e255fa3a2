"""The Open Inference Protocol's operations over the service's resources; REST and gRPC are thin adapters.

Versions: the protocol's version string is a store version number (``"2"`` → ``name:2``) or an alias
(``"production"`` → ``name@production``); no version means the version this server serves for the name.
Inference runs through ``Classifier.run``: the same admission, decode pool, batcher and deadline as
``/classify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.reference import VERSION_PATTERN
from vitserve.service.classify import Classifier
from vitserve.service.lifecycle.versions import VersionRegistry
from vitserve.service.settings import Settings
from vitserve.service.v2.tensors import (
    InputTensor,
    OutputRequest,
    OutputTensor,
    TensorSpec,
    build_outputs,
    check_outputs,
    images_from,
    input_specs,
    output_specs,
)

SERVER_NAME = "vitserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("classification", "binary_tensor_data")

# The protocol's platform names (Triton's where it has one) for the engines that may run a version.
_PLATFORMS = {"MindSporeEngine": "mindspore", "OnnxRuntimeEngine": "onnxruntime_onnx", "OpenVinoEngine": "openvino"}


class Lifecycle(Protocol):
    draining: bool  # set from SIGTERM or the lifespan's end


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]  # the versions loaded here, oldest first
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class InferRequest:
    """One inference request, decoded from its transport."""

    model: str
    version: str | None
    inputs: Sequence[InputTensor]
    outputs: Sequence[OutputRequest] | None  # None: every output
    id: str | None = None
    timeout_s: float | None = None  # the client's deadline; it can only shorten the server's


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[OutputTensor]


def reference(name: str, version: str | None) -> str:
    """The store reference for a protocol (name, version) pair: ASCII digits are a version number, anything else
    an alias (which the store validates)."""
    if not version:
        return name
    return f"{name}:{version}" if VERSION_PATTERN.fullmatch(version) else f"{name}@{version}"


@dataclass(frozen=True)
class InferenceProtocol:
    """Health, metadata and inference as the protocol defines them. Built per request from ``app.state``."""

    settings: Settings
    store: ModelStore
    registry: VersionRegistry
    classifier: Classifier
    lifecycle: Lifecycle

    @classmethod
    def from_state(cls, state: Any) -> InferenceProtocol:
        return cls(state.settings, state.store, state.registry, state.classifier, state.lifecycle)

    def ready(self) -> bool:
        """A model is loaded and warm, and the server is not draining."""
        return self.registry.ready and not self.lifecycle.draining

    async def model_ready(self, name: str, version: str | None) -> bool:
        """Whether requests for (name, version) would run now; ``ModelNotFound`` when the store has no such
        version, ``InvalidName`` for a malformed one."""
        card = await self.registry.store_calls.run(self.store.resolve, reference(name, version))
        if not version:
            return self.ready() and self.registry.serving.get(name) == card.ref
        return not self.lifecycle.draining and card.ref in self.registry.loaded

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        card = await self._card(name, version)
        loaded = self.registry.loaded.get(card.ref)
        engine = type(loaded.engine).__name__ if loaded is not None else ""
        versions = sorted(v.card.version for v in self.registry.loaded.values() if v.card.name == card.name)
        return ModelMetadata(
            name=card.name,
            versions=[str(v) for v in versions],
            platform=_PLATFORMS.get(engine, engine.lower() or self.settings.engine),
            inputs=input_specs(card),
            outputs=output_specs(card),
        )

    async def _card(self, name: str, version: str | None) -> Card:
        """The served version's card for a bare name, else the store's card for the reference."""
        serving = self.registry.serving.get(name) if not version else None
        if serving is not None and serving in self.registry.loaded:
            return self.registry.loaded[serving].card
        return await self.registry.store_calls.run(self.store.resolve, reference(name, version))

    async def infer(self, request: InferRequest, *, arrived: float, client: str = "") -> InferResponse:
        """Route, check the tensors against the version's card, run every image through the classifier's
        stages, and build the requested outputs. ``client`` is the caller's identity for the admission share.
        Raises the service's errors (mapped per transport)."""
        version = await self.registry.route(reference(request.model, request.version))
        card = version.card
        images = images_from(request.inputs, card, max_images=self.settings.max_images)
        outputs = check_outputs(request.outputs, card, max_top_k=self.settings.max_top_k)
        deadline = self.classifier.deadline(arrived, request.timeout_s)
        rows = await self.classifier.run(version, images, deadline=deadline, arrived=arrived, client=client)
        logits = np.stack([row for row, _ in rows])
        return InferResponse(card.name, str(card.version), request.id, build_outputs(logits, outputs, card.labels))
