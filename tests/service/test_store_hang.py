"""A store that hangs leaves the replica serving what it has loaded, says so, and never blocks serving, the
default executor (URL lookups) or shutdown.

The store here really hangs: it is a FUSE mount (``tests/service/hanging_store.py``) whose every call blocks in
the kernel while a switch file exists, as a hard NFS mount does while its server is down. Calls into it do not
fail and do not time out by themselves.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import auth, png
from tests.service.test_fleet import wait_for

pytestmark = pytest.mark.anyio

HUNG = {"store_poll_interval_s": 0.05, "lease_ttl_s": 2.0, "store_timeout_s": 0.5, "replica_id": "hang-test"}


@pytest.fixture
def hanging_store(tiny_store_template: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount point, switch): the tiny store behind a FUSE mount that hangs while ``switch`` exists."""
    if not Path("/dev/fuse").exists() or (shutil.which("fusermount3") is None and shutil.which("fusermount") is None):
        pytest.fail("FUSE is needed (/dev/fuse and fusermount: scripts/install.sh dev installs fuse3 as root)")
    backing, mount, switch = tmp_path / "backing", tmp_path / "mnt", tmp_path / "hang"
    shutil.copytree(tiny_store_template, backing)
    mount.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.service.hanging_store", str(backing), str(mount), str(switch)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mount):
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "FUSE server exited"
            assert time.monotonic() < deadline, "the FUSE mount did not come up"
            time.sleep(0.05)
        yield mount, switch
    finally:
        switch.unlink(missing_ok=True)  # every blocked call returns, in this process and in the server
        unmount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
        subprocess.run([unmount, "-u", "-z", str(mount)], check=False, capture_output=True)
        server.terminate()
        server.wait(timeout=10)


async def test_a_hung_store_leaves_the_replica_serving_and_saying_so(
    serve: Any, hanging_store: tuple[Path, Path]
) -> None:
    mount, switch = hanging_store
    async with serve(store_root=mount, **HUNG) as (client, app):
        assert (await client.post("/classify", files={"file": png(1)})).status_code == 200
        switch.touch()  # the store stops answering
        await asyncio.sleep(0.3)  # a few polls go out and hang
        for _ in range(10):  # serving needs nothing of the store
            assert (await client.post("/classify", files={"file": png(2)})).status_code == 200
            assert (await client.post("/classify?model=tiny:1", files={"file": png(2)})).status_code == 200
        started = time.monotonic()  # the default executor (getaddrinfo, body joins) is not starved
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.01) for _ in range(64)))
        assert time.monotonic() - started < 2
        await wait_for(lambda: _unreachable(client), timeout_s=5)
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text  # the loaded version is healthy: ready (docs say why)
        assert ready.json()["store"]["detail"].startswith("store: unreachable since ")
        started = time.monotonic()
        listing = await client.get("/models")
        assert listing.status_code == 200 and time.monotonic() - started < 3
        assert listing.json()["store"]["reachable"] is False
        assert [m["name"] for m in listing.json()["models"]] == ["tiny"]
        aliased = await client.post("/classify?model=tiny@production", files={"file": png(2)})
        assert aliased.status_code == 503 and aliased.json()["error"]["code"] == "store_unreachable"
        admin = await client.post("/admin/models/tiny/aliases/production", json={"version": 2}, headers=auth())
        assert admin.status_code == 503, admin.text
        assert (await client.get("/healthz")).status_code == 200
        switch.unlink()  # the server answers again: the store is followed again
        await wait_for(lambda: _reachable(client), timeout_s=5)
        switch.touch()
        await asyncio.sleep(0.2)
        started = time.monotonic()
    # Shutdown with the store hung: drained and closed, the lease left to expire (it cannot be released).
    assert time.monotonic() - started < 5
    assert app.state.registry.loaded == {}


async def _unreachable(client: Any) -> bool:
    return (await client.get("/readyz")).json()["store"]["reachable"] is False


async def _reachable(client: Any) -> bool:
    return (await client.get("/readyz")).json()["store"]["reachable"] is True
