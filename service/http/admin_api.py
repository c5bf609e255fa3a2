"""Admin routes under ``/admin`` (bearer token; not mounted at all when no token is configured).

Upload a checkpoint (verified by loading it into the model before it is published), move an alias (with a hot
swap when it is ``production`` of a served model), roll back, load and unload versions. Nothing here fetches
weights or code from a URL: uploads are the request body. Alias changes are written to the store and this
replica then follows the store (``service.lifecycle.follower``), as every other replica does within its poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from vitserve.model_store import Card, ModelStore
from vitserve.model_store.pretrained import default_labels
from vitserve.model_store.reference import validate_name
from vitserve.service.core.errors import InvalidField, Unauthorized, without_paths
from vitserve.service.core.schemas import ERROR_RESPONSES, AliasRequest, RollbackRequest
from vitserve.service.lifecycle.versions import VersionRegistry
from vitserve.vit.checkpoint import load_checkpoint_file
from vitserve.vit.config import DataConfig, ViTConfig
from vitserve.vit.files import sha256_file

PRODUCTION = "production"


async def require_token(request: Request) -> None:
    expected: str = request.app.state.settings.admin_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)], responses=ERROR_RESPONSES)


def _registry(request: Request) -> VersionRegistry:
    registry: VersionRegistry = request.app.state.registry
    return registry


def _summary(card: Card, registry: VersionRegistry) -> dict[str, Any]:
    return {
        "name": card.name,
        "version": card.version,
        "sha256": card.sha256,
        "loaded": card.ref in registry.loaded,
        "serving": registry.serving.get(card.name),
        "pinned": card.ref in registry.pins,
    }


_TEXT = {"type": "string"}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "checkpoint": {"type": "string", "format": "binary", "description": "MindSpore .ckpt"},
                        "config": {**_TEXT, "description": "ViTConfig JSON"},
                        "data": {**_TEXT, "description": "DataConfig JSON (default: from config.img_size)"},
                        "labels": {**_TEXT, "description": "JSON list of class names"},
                        "description": _TEXT,
                        "alias": {"type": "array", "items": _TEXT},
                    },
                    "required": ["checkpoint", "config"],
                }
            }
        },
    }
}


@router.post(
    "/models/{name}/versions",
    status_code=201,
    summary="Upload a checkpoint as a new version",
    openapi_extra=_UPLOAD_BODY,
)
async def upload_version(request: Request, name: str) -> JSONResponse:
    """Multipart: ``checkpoint`` (file), ``config`` (ViTConfig JSON), optional ``data``, ``labels`` (JSON),
    ``description``, ``alias`` (repeatable). See "Admin upload API" in the team contracts."""
    validate_name(name)
    async with request.form(max_files=1, max_fields=16) as form:
        upload = form.get("checkpoint")
        if not isinstance(upload, UploadFile):
            raise InvalidField("checkpoint: a file field is required")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        aliases = [v for k, v in form.multi_items() if k == "alias" and isinstance(v, str) and v]
        config, data, labels = _parse_card_fields(fields)
        with tempfile.TemporaryDirectory(prefix="vitserve-upload-") as tmp:
            path = Path(tmp) / "upload.ckpt"
            with path.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
            store: ModelStore = request.app.state.store
            publish = functools.partial(
                _verify_and_publish,
                store,
                name,
                path,
                config,
                data,
                labels,
                uploaded=upload.filename or "checkpoint",
                description=fields.get("description", ""),
                aliases=aliases,
            )
            # Building a model and saving a checkpoint are MindSpore calls: on the builder thread, which is the
            # device thread only while MindSpore engines serve (service.lifecycle.work_threads).
            card = await asyncio.get_running_loop().run_in_executor(_registry(request).builder, publish)
    return JSONResponse({**card.to_dict(), **_summary(card, _registry(request))}, status_code=201)


def _parse_card_fields(fields: dict[str, str]) -> tuple[ViTConfig, DataConfig, list[str]]:
    try:
        config = ViTConfig.from_json(fields["config"])
        data = DataConfig.from_dict(json.loads(fields["data"])) if fields.get("data") else None
        labels = json.loads(fields["labels"]) if fields.get("labels") else None
    except KeyError:
        raise InvalidField("config: the ViTConfig JSON text field is required") from None
    except (ValueError, TypeError) as err:
        raise InvalidField(f"config/data/labels: {err}") from None
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise InvalidField("labels: expected a JSON list of strings")
    if labels is not None and len(labels) != config.num_classes:
        raise InvalidField(f"labels: {len(labels)} given; config.num_classes is {config.num_classes}")
    return config, data or DataConfig(img_size=config.img_size), labels or default_labels(config.num_classes)


def _verify_and_publish(
    store: ModelStore,
    name: str,
    path: Path,
    config: ViTConfig,
    data: DataConfig,
    labels: list[str],
    *,
    uploaded: str,
    **kwargs: Any,
) -> Card:
    """Read the weights, load them strictly into a model of ``config``, refuse non-finite values, publish."""
    from vitserve.vit.checkpoint import load_state_dict
    from vitserve.vit.model import create_model

    try:
        state = load_checkpoint_file(path)
    except (OSError, ValueError) as err:
        raise InvalidField(f"checkpoint: not a readable MindSpore checkpoint: {without_paths(str(err))}") from None
    load_state_dict(create_model(config), state)  # CheckpointMismatch (422) names every bad key
    bad = sorted(k for k, v in state.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all())
    if bad:
        raise InvalidField(f"checkpoint: non-finite values in {', '.join(bad[:5])}")
    lineage = {"uploaded": uploaded, "sha256": sha256_file(path)}
    return store.publish(name, state, config, data, labels, lineage=lineage, **kwargs)


@router.post("/models/{name}/aliases/{alias}", summary="Point an alias at a version (hot swap for production)")
async def set_alias(request: Request, name: str, alias: str, body: AliasRequest) -> dict[str, Any]:
    """For ``production`` of a model this service serves, the version is loaded and warmed first; if that
    fails nothing changes (409 load_failed). Then the store's eval gate decides (409 promotion_refused)."""
    registry = _registry(request)
    ref = f"{name}:{body.version}"
    swap = alias == PRODUCTION and name in registry.serving
    async with registry.hold(ref) if swap else contextlib.nullcontext():
        card = await registry.store_calls.run(
            functools.partial(registry.store.set_alias, force=body.force, dataset=body.dataset),
            name,
            alias,
            body.version,
        )
        if name in registry.serving:
            # Follow the store rather than swap to ``ref``: under concurrent alias changes the last
            # reconciliation reads the alias's final value, so what is served always ends equal to it.
            followed = await request.app.state.follower.sync(name)
            if followed is None and swap:  # this replica is pinned to a version: the admin's swap is explicit
                await registry.load(ref, serve=True)
    return {**_summary(card, registry), "alias": alias}


@router.post("/models/{name}/rollback", summary="Move an alias back to its previous version")
async def rollback(request: Request, name: str, body: RollbackRequest | None = None) -> dict[str, Any]:
    registry = _registry(request)
    alias = (body or RollbackRequest()).alias
    card = await registry.store_calls.run(registry.store.rollback, name, alias)
    if name in registry.serving:
        await request.app.state.follower.sync(name)
    return {**_summary(card, registry), "alias": alias}


@router.post("/models/{ref}/load", summary="Load and warm a version beside the others; it stays until unloaded")
async def load(
    request: Request, ref: str, serve: Annotated[bool, Query(description="also make it serve its name")] = False
) -> dict[str, Any]:
    """Without ``serve``, an explicit load: a pin that no store change drops, leased as long as it is loaded,
    until ``POST /admin/models/{ref}/unload``."""
    registry = _registry(request)
    version = await registry.load(ref, serve=serve)
    return _summary(version.card, registry)


@router.post("/models/{ref}/unload", summary="Unload a version that is not serving its name")
async def unload(request: Request, ref: str) -> dict[str, Any]:
    registry = _registry(request)
    card = await registry.unpin(ref)
    return _summary(card, registry)
