"""Admin routes for canaries, and what ``GET /models`` says about the fleet (split, sync state) per name.

Every admin route writes the store, then makes this replica follow it at once; the other replicas follow it
within their poll interval (``service.lifecycle.follower``). So a call has the same effect whichever replica
answers it, and the same as the CLI's ``vitserve models canary|promote|abort`` against the shared store.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from vitserve.service.core.schemas import (
    ERROR_RESPONSES,
    CanaryInfo,
    CanaryPromoteRequest,
    CanaryRequest,
    SyncInfo,
)
from vitserve.service.http.admin_api import require_token
from vitserve.service.lifecycle.follower import StoreFollower

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)], responses=ERROR_RESPONSES)


def _follower(request: Request) -> StoreFollower:
    follower: StoreFollower = request.app.state.follower
    return follower


async def _synced(follower: StoreFollower, name: str, alias: str, action: str) -> dict[str, Any]:
    if name in follower.registry.serving:
        await follower.sync(name)
    return {"name": name, "alias": alias, "action": action, **fleet_fields(follower, name)}


@router.post("/models/{name}/aliases/{alias}/canary", summary="Send a share of an alias's requests to a version")
async def set_canary(request: Request, name: str, alias: str, body: CanaryRequest) -> dict[str, Any]:
    follower = _follower(request)
    await follower.calls.run(follower.store.set_canary, name, alias, body.version, body.weight)
    return await _synced(follower, name, alias, "canary")


@router.post("/models/{name}/aliases/{alias}/canary/promote", summary="Point the alias at its canary's version")
async def promote_canary(
    request: Request, name: str, alias: str, body: CanaryPromoteRequest | None = None
) -> dict[str, Any]:
    """Eval-gated for ``production`` like any promotion (409 promotion_refused, nothing changes)."""
    follower, body = _follower(request), body or CanaryPromoteRequest()
    await follower.calls.run(
        lambda: follower.store.end_canary(name, alias, promote=True, force=body.force, dataset=body.dataset)
    )
    return await _synced(follower, name, alias, "promote")


@router.post("/models/{name}/aliases/{alias}/canary/abort", summary="End the canary: all requests to the alias")
async def abort_canary(request: Request, name: str, alias: str) -> dict[str, Any]:
    follower = _follower(request)
    await follower.calls.run(lambda: follower.store.end_canary(name, alias, promote=False))
    return await _synced(follower, name, alias, "abort")


def fleet_fields(follower: StoreFollower, name: str) -> dict[str, Any]:
    """``canary`` and ``sync`` of ``GET /models`` for ``name`` (``None`` where they do not apply)."""
    registry = follower.registry
    split = registry.splits.get(name)
    canary = None
    if split is not None:
        canary = CanaryInfo(
            alias=split.alias,
            stable_version=int(split.stable.split(":")[1]),
            canary_version=int(split.canary.split(":")[1]),
            weight=split.weight,
            sticky_header=follower.settings.canary_sticky_header,
            stats={ref: registry.stats.get(ref).summary() for ref in (split.stable, split.canary)},
        )
    state = follower.states.get(name)
    target = state.target if state else None
    sync = SyncInfo(
        replica=follower.replica,
        followed=follower.followed(name),
        target_version=int(target.stable.split(":")[1]) if target else None,
        target_canary=int(target.canary.split(":")[1]) if target and target.canary else None,
        in_sync=not (state and state.pending),
        error=state.error if state else None,
        retry_in_s=round(max(0.0, state.retry_at - time.monotonic()), 2) if state and state.error else None,
        guard_abort=follower.aborts.get(name),
    )
    return {"canary": canary, "sync": sync}
