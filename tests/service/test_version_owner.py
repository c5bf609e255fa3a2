"""One owner of a replica's versions: explicit loads are pins that no store change drops, the lease follows what is
loaded, and nothing but the registry's intents changes its state. In-process on the fake engine."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.service.fakes import auth, png
from tests.service.test_fleet import FAST, wait_for
from vitserve.model_store import ModelStore, VersionHeld
from vitserve.service.lifecycle.versions import VersionRegistry

pytestmark = pytest.mark.anyio


async def _pinned_answer(client: httpx.AsyncClient, ref: str) -> int:
    response = await client.post(f"/classify?model={ref}", files={"file": png(1)})
    return response.status_code


async def _leased(store: ModelStore) -> set[str]:
    return await asyncio.to_thread(lambda: {ref for lease in store.leases.live() for ref in lease.holds})


async def test_an_explicit_load_survives_a_canary_abort_and_keeps_its_lease(serve: Any, store: ModelStore) -> None:
    async with serve(**FAST) as (client, app):
        registry: VersionRegistry = app.state.registry
        store.set_canary("tiny", "production", 2, 50)
        await wait_for(lambda: _has(registry, "tiny:2"))
        response = await client.post("/admin/models/tiny:2/load", headers=auth())
        assert response.status_code == 200 and response.json()["pinned"] is True
        store.end_canary("tiny", "production", promote=False)  # any writer; the follower sees it within a poll
        await wait_for(lambda: _no_split(registry))
        await asyncio.sleep(0.3)  # several polls after the change
        assert "tiny:2" in registry.loaded, "the follower dropped an explicitly loaded version"
        assert await _pinned_answer(client, "tiny:2") == 200
        assert "tiny:2" in await _leased(store)
        with pytest.raises(VersionHeld):
            store.delete("tiny:2")
        # The explicit unload ends the pin: unloaded, and the lease no longer names it.
        response = await client.post("/admin/models/tiny:2/unload", headers=auth())
        assert response.status_code == 200, response.text
        assert "tiny:2" not in registry.loaded
        assert "tiny:2" not in await _leased(store)


async def test_an_explicit_load_survives_a_promote_and_a_rollback(serve: Any, store: ModelStore) -> None:
    async with serve(**FAST) as (client, app):
        registry: VersionRegistry = app.state.registry
        assert (await client.post("/admin/models/tiny:2/load", headers=auth())).status_code == 200
        store.set_alias("tiny", "production", 2)
        await wait_for(lambda: _serves(registry, "tiny:2"))
        store.rollback("tiny")
        await wait_for(lambda: _serves(registry, "tiny:1"))
        await asyncio.sleep(0.3)
        assert "tiny:2" in registry.loaded and "tiny:2" in registry.pins
        assert await _pinned_answer(client, "tiny:2") == 200


async def test_a_promote_through_the_admin_api_leaves_no_version_behind(serve: Any, store: ModelStore) -> None:
    """The version loaded ahead of the alias change is held, not pinned: once the store moves on, it goes."""
    async with serve(**FAST) as (client, app):
        registry: VersionRegistry = app.state.registry
        response = await client.post("/admin/models/tiny/aliases/production", json={"version": 2}, headers=auth())
        assert response.status_code == 200, response.text
        assert registry.serving["tiny"] == "tiny:2"
        response = await client.post("/admin/models/tiny/rollback", json={}, headers=auth())
        assert response.status_code == 200, response.text
        await wait_for(lambda: _serves(registry, "tiny:1"))
        assert set(registry.loaded) == {"tiny:1"} and not registry.pins
        assert await _leased(store) == {"tiny:1"}


async def test_the_state_is_read_only_outside_its_owner(serve: Any) -> None:
    async with serve(**FAST) as (_, app):
        registry: VersionRegistry = app.state.registry
        for view in (registry.loaded, registry.serving, registry.splits, registry.failures):
            with pytest.raises(TypeError):
                view["tiny:9"] = None  # type: ignore[index]
        with pytest.raises(AttributeError):
            registry.pins.add("tiny:9")  # type: ignore[attr-defined]


async def _has(registry: VersionRegistry, ref: str) -> bool:
    return ref in registry.loaded


async def _no_split(registry: VersionRegistry) -> bool:
    return "tiny" not in registry.splits


async def _serves(registry: VersionRegistry, ref: str) -> bool:
    return registry.serving.get("tiny") == ref
