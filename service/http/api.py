"""Public routes: classify, models, probes and metrics. Resources come from ``request.app.state``."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from vitserve.model_store import Card
from vitserve.service.classify import Classifier
from vitserve.service.core.schemas import ERROR_RESPONSES, ClassifyResponse, ModelInfo, ModelList, VersionInfo
from vitserve.service.http.fleet_api import fleet_fields
from vitserve.service.http.model_listing import listed_model
from vitserve.service.inputs.body import read_inputs
from vitserve.service.lifecycle.follower import StoreFollower
from vitserve.service.lifecycle.versions import VersionRegistry

router = APIRouter()

_IMAGE = {"type": "string", "format": "binary"}
_CLASSIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": _IMAGE, "description": "one or more images"},
                        "top_k": {"type": "integer"},
                        "model": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyJSON"}},
            "image/*": {"schema": _IMAGE},
        },
    }
}


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_CLASSIFY_BODY,
    summary="Top-k labels for one or more images",
)
async def classify(
    request: Request,
    top_k: Annotated[int | None, Query(ge=1, description="labels per image (default 5)")] = None,
    model: Annotated[str | None, Query(description="name, name:version or name@alias")] = None,
    timeout_s: Annotated[float | None, Query(gt=0, description="a deadline shorter than the server's")] = None,
) -> ClassifyResponse:
    """Images as multipart ``file`` fields, JSON ``{"url"}``/``{"image_base64"}``/``{"images": [...]}``, or an
    ``image/*`` body. Body fields ``top_k``/``model`` take precedence over the query's."""
    arrived = time.monotonic()
    classifier: Classifier = request.app.state.classifier
    inputs = await read_inputs(request, max_images=request.app.state.settings.max_images)
    sticky = request.app.state.settings.canary_sticky_header
    key = request.headers.get(sticky) if sticky else None  # keeps a client on one side of a canary
    return await classifier.classify(inputs, top_k=top_k, model=model, timeout_s=timeout_s, arrived=arrived, key=key)


@router.get("/models", response_model=ModelList, summary="Models in the store, their versions and what is loaded")
async def list_models(request: Request) -> ModelList:
    registry: VersionRegistry = request.app.state.registry
    names = await asyncio.to_thread(registry.store.list_models)
    follower = request.app.state.follower
    entries = [await listed_model(registry, name, partial(_model_info, follower=follower)) for name in names]
    return ModelList(models=entries)


@router.get("/models/{name}", response_model=ModelInfo, responses=ERROR_RESPONSES, summary="One model's versions")
async def get_model(request: Request, name: str) -> ModelInfo:
    return await _model_info(request.app.state.registry, name, request.app.state.follower)


async def _model_info(registry: VersionRegistry, name: str, follower: StoreFollower) -> ModelInfo:
    cards, aliases = await asyncio.to_thread(lambda: (registry.store.versions(name), registry.store.aliases(name)))
    serving = registry.serving.get(name)
    return ModelInfo(
        name=name,
        serving_version=int(serving.split(":")[1]) if serving else None,
        aliases=aliases,
        versions=[_version_info(registry, card, aliases, serving) for card in cards],
        **fleet_fields(follower, name),  # the canary split and how this replica follows the store
    )


def _version_info(registry: VersionRegistry, card: Card, aliases: dict[str, int], serving: str | None) -> VersionInfo:
    loaded = card.ref in registry.loaded
    return VersionInfo(
        version=card.version,
        aliases=sorted(a for a, v in aliases.items() if v == card.version),
        loaded=loaded,
        serving=serving == card.ref,
        ready=loaded,  # a version enters ``loaded`` only once warmed
        load_error=registry.failures.get(card.ref),
        metrics=card.metrics,
        created_at=card.created_at,
        description=card.description,
        num_classes=card.config.num_classes,
        img_size=card.config.img_size,
    )


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="A model is loaded and warm, and the server is not draining")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    registry: VersionRegistry = state.registry
    ready = registry.ready and not state.lifecycle.draining
    body = {
        "ready": ready,
        "draining": state.lifecycle.draining,
        "serving": dict(registry.serving),
        "error": state.lifecycle.startup_error,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.ready.set(1 if state.registry.ready and not state.lifecycle.draining else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
