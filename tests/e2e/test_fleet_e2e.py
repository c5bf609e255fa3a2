"""Three real ``vitserve serve`` replicas on one store: they follow the CLI, lease what they hold, and split and
guard a canary. The tests share the fleet and run in file order (each leaves the fleet as the next expects)."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.e2e_server import REPO, SERVER_SETTINGS, ServerProcess, jpeg, metric
from tests.tiny import TINY_DATA, publish_tiny
from vitserve.model_store import ModelStore
from vitserve.runtime.export_cache import cache_path
from vitserve.vit.config import DataConfig

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

POLL_S, LEASE_TTL_S = 0.3, 2.5
# The bound a promotion must meet on every replica: a poll, then loading and warming the tiny model (which
# compiles a graph per batch size), on a CI machine shared with other jobs.
CONVERGENCE_BOUND_S = 30.0
FLEET = {
    **SERVER_SETTINGS,
    "max_batch_size": 2,
    "store_poll_interval_s": POLL_S,
    "lease_ttl_s": LEASE_TTL_S,
    "follow_retry_s": 1.0,
    "canary_guard": "true",
    "canary_min_requests": 10,
    "drain_timeout_s": 5,
    # A swap builds the new version on the one device thread (service.lifecycle.versions): an ONNX export, or
    # the wait for another replica's, delays the serving version's batches meanwhile. On a CI machine shared
    # with other jobs that can pass the default 10 s deadline; this test counts lost requests, not latency.
    "request_timeout_s": 60,
}
IMAGE = jpeg(0)


def cli(store: ModelStore, *args: str) -> subprocess.CompletedProcess[str]:
    """``vitserve models ...`` in its own process, against the shared store."""
    command = [sys.executable, "-m", "vitserve.admin.main", "models", *args, "--store", str(store.root)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """tiny:1 (production), tiny:2, tiny:3; tiny:4 whose card's preprocessing (40 px) does not fit its model
    (32 px): it loads and warms, then fails every request, the version a canary guard must stop."""
    store = ModelStore(tmp_path_factory.mktemp("fleet") / "store")
    publish_tiny(store, seed=0, aliases=("production",))
    publish_tiny(store, seed=1)
    publish_tiny(store, seed=2)
    publish_tiny(store, seed=3, data=DataConfig(img_size=40, crop_pct=TINY_DATA.crop_pct))
    return store


@pytest.fixture(scope="module")
def fleet(fleet_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Three replicas on ONNX Runtime, the CPU path (each version is exported once into the store's cache, so a
    swap costs a session, not a compilation); replica 2 serves at int8 (its own export of each version). Each
    has its own MindSpore compile cache, as each pod does (deploy/base/configmap.yaml)."""
    logs = tmp_path_factory.mktemp("fleet-logs")
    servers = [
        ServerProcess(
            fleet_store.root,
            logs / f"replica-{i}.log",
            **{
                **FLEET,
                "replica_id": f"replica-{i}",
                "engine": "onnxruntime",
                "engine_precision": "int8" if i == 2 else "fp32",
                "compile_cache_dir": logs / f"compile-cache-{i}",
            },
        )
        for i in range(3)
    ]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # start-ups overlap: each waits mostly on imports
            list(pool.map(lambda server: server.start(), servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


async def serving(server: ServerProcess) -> dict:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(f"{server.url}/models/tiny")).json()


async def converge(servers: list[ServerProcess], version: int, timeout_s: float) -> list[float]:
    """Seconds until each server serves ``version`` (polling /models every 50 ms)."""
    started, took = time.monotonic(), [0.0] * len(servers)
    pending = set(range(len(servers)))
    while pending:
        assert time.monotonic() - started < timeout_s, f"not converged on {version} in {timeout_s} s: {pending}"
        for i in list(pending):
            if (await serving(servers[i]))["serving_version"] == version:
                took[i] = time.monotonic() - started
                pending.discard(i)
        await asyncio.sleep(0.05)
    return took


@dataclass
class Load:
    """A client sending one request at a time to each replica in turn; every answer is kept."""

    servers: list[ServerProcess]
    answers: list[tuple[int, int, int | None]] = field(default_factory=list)  # (replica, status, version)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=90) as client:
            while not self.stop.is_set():
                for i, server in enumerate(self.servers):
                    response = await client.post(f"{server.url}/classify", files={"file": ("x.jpg", IMAGE)})
                    version = response.json()["model"]["version"] if response.status_code == 200 else None
                    self.answers.append((i, response.status_code, version))
                await asyncio.sleep(0.02)

    def failures(self) -> list[tuple[int, int, int | None]]:
        return [answer for answer in self.answers if answer[1] != 200]


async def test_convergence_over_20_alias_changes(fleet: list[ServerProcess], fleet_store: ModelStore) -> None:
    """The measurement: time from an alias change in the store to every replica serving it."""
    times: list[float] = []
    for change in range(20):
        version = 2 if change % 2 == 0 else 1
        fleet_store.set_alias("tiny", "production", version, force=True)
        times.append(max(await converge(fleet, version, CONVERGENCE_BOUND_S)))
    print(
        f"\nconvergence over {len(times)} alias changes, 3 replicas, poll {POLL_S} s: "
        f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s "
        f"(max {max(times[2:]):.2f} s once both versions' exports are cached); " + " ".join(f"{t:.2f}" for t in times)
    )
    assert fleet_store.aliases("tiny")["production"] == 1


async def test_cli_promote_failure_delete_and_sigkill(fleet: list[ServerProcess], fleet_store: ModelStore) -> None:
    load = Load(fleet)
    task = asyncio.create_task(load.run())
    try:
        # 1. A CLI promotion reaches every replica within the bound, under load, with no failed request.
        promoted = cli(fleet_store, "promote", "tiny", "2", "--force")
        assert promoted.returncode == 0, promoted.stderr
        took = await converge(fleet, 2, CONVERGENCE_BOUND_S)
        # 2. tiny:3 cannot load on the int8 replica: a directory squats where its int8 export goes.
        blocker = cache_path(fleet_store, fleet_store.card("tiny", 3), "int8")
        blocker.mkdir(parents=True)
        assert cli(fleet_store, "promote", "tiny", "3", "--force").returncode == 0
        await converge(fleet[:2], 3, CONVERGENCE_BOUND_S)
        await asyncio.sleep(4 * POLL_S)
        held_back = await serving(fleet[2])
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{fleet[2].url}/metrics")).text
    finally:
        load.stop.set()
        await task
    assert load.failures() == [], load.failures()[:5]
    assert {v for i, s, v in load.answers[-6:]} == {3, 2}  # replicas 0, 1 on 3; replica 2 still on 2
    assert max(took) < CONVERGENCE_BOUND_S
    assert held_back["serving_version"] == 2 and held_back["sync"]["in_sync"] is False
    assert "tiny:3" in held_back["sync"]["error"] and held_back["versions"][2]["load_error"]
    assert metric(text, "vitserve_store_in_sync", model="tiny") == 0

    # 3. tiny:2 is unaliased now, but replica 2 still serves it: delete is refused, gc keeps it.
    refused = cli(fleet_store, "delete", "tiny:2")
    assert refused.returncode == 4 and "replica-2" in refused.stderr and "loaded by running replica" in refused.stderr
    gc = cli(fleet_store, "gc", "tiny")
    assert gc.returncode == 0 and "kept, loaded by running replicas: tiny:2 (" in gc.stdout and "replica-2" in gc.stdout

    # 4. SIGKILL replica 2: nothing releases its lease, which then expires; the delete goes through.
    assert fleet[2].proc is not None
    os.kill(fleet[2].proc.pid, signal.SIGKILL)
    fleet[2].wait(10)
    killed_at = time.monotonic()
    assert "replica-2" in fleet_store.held("tiny")[2]  # its lease has not expired yet
    while (deleted := cli(fleet_store, "delete", "tiny:2")).returncode != 0:
        assert time.monotonic() - killed_at < LEASE_TTL_S + 30, deleted.stderr
        time.sleep(0.5)
    assert "deleted tiny:2" in deleted.stdout
    blocker.rmdir()


async def test_canary_split_and_guard_across_replicas(fleet: list[ServerProcess], fleet_store: ModelStore) -> None:
    live = fleet[:2]  # replica 2 was killed above
    canary = publish_tiny(fleet_store, seed=5)  # gc removed the unheld, unaliased tiny:1 above
    assert cli(fleet_store, "canary", "tiny", str(canary.version), "--weight", "30").returncode == 0
    for server in live:
        await _wait_canary(server, present=True)
    versions: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(200):
            response = await client.post(f"{live[n % 2].url}/classify", files={"file": ("x.jpg", IMAGE)})
            assert response.status_code == 200, response.text
            versions.append(response.json()["model"]["version"])
    share = versions.count(canary.version) / len(versions)
    print(f"\nreal replicas: canary share {share:.3f} over {len(versions)} requests (weight 30 %)")
    # A healthy canary keeps its split: the guard (10 requests a side) must not abort it for one slow request.
    aborts = [(await serving(server))["sync"]["guard_abort"] for server in live]
    assert fleet_store.canary("tiny", "production") is not None, aborts
    assert 0.18 <= share <= 0.42  # 200 draws at p = 0.3: 4 standard deviations either side
    assert cli(fleet_store, "abort", "tiny").returncode == 0

    # A canary whose version fails every request: the guard of the replica that sees it first aborts it in
    # the store, and every replica follows.
    assert cli(fleet_store, "canary", "tiny", "4", "--weight", "50").returncode == 0
    for server in live:
        await _wait_canary(server, present=True)
    statuses = []
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(200):
            response = await client.post(f"{live[n % 2].url}/classify", files={"file": ("x.jpg", IMAGE)})
            statuses.append(response.status_code)
            if fleet_store.canary("tiny", "production") is None:
                break
    assert fleet_store.canary("tiny", "production") is None, "the guard never aborted the canary"
    assert 500 in statuses
    infos = [await _wait_canary(server, present=False) for server in live]
    aborts = [info["sync"]["guard_abort"] for info in infos if info["sync"]["guard_abort"]]
    assert aborts and "tiny:4 aborted by the guard" in aborts[0] and "error rate" in aborts[0]
    assert all(info["serving_version"] == 3 for info in infos)


async def _wait_canary(server: ServerProcess, *, present: bool, timeout_s: float = CONVERGENCE_BOUND_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        info = await serving(server)
        if (info["canary"] is not None) == present:
            return info
        assert time.monotonic() < deadline, f"{server.url}: canary present={present} not reached: {info}"
        await asyncio.sleep(0.05)
