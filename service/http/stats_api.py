"""``GET /stats`` (the live figures of ``live_stats``) and the stored figures of a version (confusion matrices).

Figures are served through ``model_store.figures``: a dataset name is looked up among the files that exist,
never joined onto a path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import FileResponse

from vitserve.model_store.figures import confusion_image, confusion_images
from vitserve.service.core.live_stats import LiveStats, batch_totals, run_sampler
from vitserve.service.core.schemas import ERROR_RESPONSES
from vitserve.service.lifecycle.versions import VersionRegistry


@contextlib.asynccontextmanager
async def _sampling(app: FastAPI) -> AsyncIterator[None]:
    """Ticks the app's ``LiveStats`` once a second while the app runs."""
    stats: LiveStats = app.state.live_stats
    registry: VersionRegistry = app.state.registry

    def depth() -> int:
        return sum(version.batcher.depth for version in list(registry.loaded.values()))

    task = asyncio.get_running_loop().create_task(
        run_sampler(stats, lambda: batch_totals(app.state.metrics.registry), depth), name="live-stats"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(lifespan=_sampling)

Version = Annotated[int, Path(ge=1)]


@router.get("/stats", summary="Live figures over the last minute, one sample per second")
async def stats(request: Request) -> dict[str, Any]:
    """``summary`` over the window (requests/s, images/s, mean batch size, queue depth, p50/p99 ms) and
    ``series``: one object per second, oldest first, with the same figures for that second."""
    live: LiveStats = request.app.state.live_stats
    return live.snapshot()


@router.get(
    "/models/{name}/versions/{version}/figures",
    responses=ERROR_RESPONSES,
    summary="The figures stored with a version (confusion matrices by dataset), as URLs",
)
async def figures(request: Request, name: str, version: Version) -> dict[str, Any]:
    store, calls = request.app.state.store, request.app.state.registry.store_calls
    card = await calls.run(store.card, name, version)
    images = await calls.run(confusion_images, store, card)
    base = f"/models/{quote(name)}/versions/{version}/confusion/"
    return {"confusion": {dataset: base + quote(dataset, safe="") for dataset in images}}


@router.get(
    "/models/{name}/versions/{version}/confusion/{dataset}",
    responses=ERROR_RESPONSES,
    response_class=FileResponse,
    summary="A version's confusion matrix on one dataset (PNG)",
)
async def confusion(request: Request, name: str, version: Version, dataset: str) -> FileResponse:
    state = request.app.state
    path = await state.registry.store_calls.run(confusion_image, state.store, name, version, dataset)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
