"""Public routes: classify, models, probes and metrics. Resources come from ``request.app.state``."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from vitserve.model_store import Card
from vitserve.service.classify import Classifier
from vitserve.service.core.schemas import (
    ERROR_RESPONSES,
    ClassifyResponse,
    MemoryInfo,
    ModelInfo,
    ModelList,
    VersionInfo,
)
from vitserve.service.http.fleet_api import fleet_fields
from vitserve.service.http.model_listing import listed_model, public_fleet_fields, public_text
from vitserve.service.inputs.body import read_inputs
from vitserve.service.lifecycle.follower import StoreFollower
from vitserve.service.lifecycle.residency import VersionUse, process_rss
from vitserve.service.lifecycle.store_calls import StoreUnreachable
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
    follower = request.app.state.follower
    try:
        names = await registry.store_calls.run(registry.store.list_models)
        entries = [await listed_model(registry, name, partial(_model_info, follower=follower)) for name in names]
    except StoreUnreachable:  # what this replica holds is still worth knowing, and it still serves it
        entries = [_loaded_info(registry, name) for name in sorted({v.card.name for v in registry.loaded.values()})]
    return ModelList(models=entries, store=registry.store_calls.status(), memory=_memory_info(registry))


def _memory_info(registry: VersionRegistry) -> MemoryInfo:
    residency = registry.residency
    return MemoryInfo(
        budget_bytes=residency.budget,
        used_bytes=residency.used,
        process_rss_bytes=process_rss(),
        on_demand_models=list(registry.settings.on_demand_models),
        evictable=sorted(registry.evictable(), key=lambda ref: residency.use(ref).last_used_mono),
    )


def _loaded_info(registry: VersionRegistry, name: str) -> ModelInfo:
    """``name``'s entry from the loaded versions alone (the store does not answer: aliases unknown)."""
    serving = registry.serving.get(name)
    cards = sorted((v.card for v in registry.loaded.values() if v.card.name == name), key=lambda c: c.version)
    return ModelInfo(
        name=name,
        serving_version=int(serving.split(":")[1]) if serving else None,
        aliases={},
        versions=[_version_info(registry, card, {}, serving) for card in cards],
    )


@router.get("/models/{name}", response_model=ModelInfo, responses=ERROR_RESPONSES, summary="One model's versions")
async def get_model(request: Request, name: str) -> ModelInfo:
    return await _model_info(request.app.state.registry, name, request.app.state.follower)


async def _model_info(registry: VersionRegistry, name: str, follower: StoreFollower) -> ModelInfo:
    cards, aliases = await registry.store_calls.run(
        lambda: (registry.store.versions(name), registry.store.aliases(name))
    )
    serving = registry.serving.get(name)
    return ModelInfo(
        name=name,
        serving_version=int(serving.split(":")[1]) if serving else None,
        aliases=aliases,
        versions=[_version_info(registry, card, aliases, serving) for card in cards],
        **public_fleet_fields(fleet_fields(follower, name)),  # the canary split and how this replica follows the store
    )


def _version_info(registry: VersionRegistry, card: Card, aliases: dict[str, int], serving: str | None) -> VersionInfo:
    loaded = card.ref in registry.loaded
    use = registry.residency.uses.get(card.ref) or VersionUse()
    return VersionInfo(
        version=card.version,
        aliases=sorted(a for a, v in aliases.items() if v == card.version),
        loaded=loaded,
        serving=serving == card.ref,
        ready=loaded,  # a version enters ``loaded`` only once warmed
        pinned=card.ref in registry.pins,
        load_error=public_text(registry.failures.get(card.ref)),
        residency=registry.residence(card.ref),
        on_demand=loaded and card.ref in registry.on_demand,
        memory_bytes=use.cost_bytes,
        cold_start_s=None if use.cold_start_s is None else round(use.cold_start_s, 3),
        last_used=None if use.last_used is None else _utc(use.last_used),
        hits=use.hits,
        misses=use.misses,
        hit_rate=None if use.hit_rate is None else round(use.hit_rate, 4),
        metrics=card.metrics,
        created_at=card.created_at,
        description=card.description,
        num_classes=card.config.num_classes,
        img_size=card.config.img_size,
    )


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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
        "error": public_text(state.lifecycle.startup_error),
        # Ready stays true while the store is unreachable: the loaded versions serve without it (a replica that
        # went unready with its store would take a whole fleet out of service for a storage hiccup).
        "store": registry.store_calls.status(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.ready.set(1 if state.registry.ready and not state.lifecycle.draining else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
