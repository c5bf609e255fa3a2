"""Many models on one replica (issue 24): versions load on demand under a memory budget, the least recently used
loaded on demand are evicted first and pinned or served ones never, one load serves every request waiting for it,
and a version that cannot fit is a 503 with its reason. In-process on the fake engine, whose engines hold a fake
memory cost the registry measures as its RSS (``FakeFactory.rss``)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import running
from tests.service.fakes import ADMIN_TOKEN, FakeFactory, auth, png
from tests.tiny import publish_tiny
from vitserve.model_store import ModelStore
from vitserve.service.app import create_app
from vitserve.service.classify import Classifier
from vitserve.service.core.errors import ServiceError
from vitserve.service.inputs.body import ClassifyInputs, ImageInput
from vitserve.service.lifecycle.versions import VersionRegistry
from vitserve.service.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.anyio

MIB = 1024**2
COST = 100 * MIB  # each fake engine's memory
MODELS = [f"m{i:02d}" for i in range(20)]


@pytest.fixture(scope="session")
def many_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with 20 one-version models, m00 … m19 (m00 production: the default model)."""
    root = tmp_path_factory.mktemp("many-models")
    store = ModelStore(root)
    for i, name in enumerate(MODELS):
        publish_tiny(store, name, seed=i, aliases=("production",) if i == 0 else ())
    return root


@pytest.fixture
def many_store(many_store_template: Path, tmp_path: Path) -> ModelStore:
    root = tmp_path / "store"
    shutil.copytree(many_store_template, root)
    return ModelStore(root)


ServeMany = Callable[..., Any]


@pytest.fixture
def serve_many(many_store: ModelStore) -> ServeMany:
    """``async with serve_many(factory, budget_models=N, **settings) as (client, app)``: m00 served, loading on
    demand on, a memory budget of N fake engines, and the fake engines' memory as the registry's RSS."""

    @asynccontextmanager
    async def _serve(
        factory: FakeFactory, *, budget_models: float = 5, **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        values: dict[str, Any] = {
            "store_root": many_store.root,
            "default_model": "m00",
            "engine": "onnxruntime",  # builds on a builder thread of their own (the fake factory builds any kind)
            "on_demand_models": ("*",),
            "memory_budget": int(budget_models * COST),
            "max_batch_size": 8,
            "max_delay_ms": 0,
            "queue_size": 64,
            "admin_token": ADMIN_TOKEN,
            "replica_id": "many-models",
            "store_poll_interval_s": 0.05,
        }
        values.update(overrides)
        app = create_app(Settings(**values), engine_factory=factory)
        app.state.registry.residency.read_rss = factory.rss
        async with running(app) as client:
            yield client, app

    return _serve


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text (0 when absent), whatever the order of its labels."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def classify(client: httpx.AsyncClient, model: str, level: int = 1, **params: Any) -> httpx.Response:
    return await client.post("/classify", files={"file": png(level)}, params={"model": model, **params})


def test_the_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSERVE_ON_DEMAND_MODELS", "cats, dogs")
    monkeypatch.setenv("VITSERVE_MODEL_WEIGHTS", "cats=4,dogs=0.5")
    monkeypatch.setenv("VITSERVE_RESULT_CACHE_MODELS", "*")
    monkeypatch.setenv("VITSERVE_MEMORY_BUDGET", "1073741824")
    settings = load_settings()
    assert settings.on_demand_models == ("cats", "dogs") and settings.memory_budget == 1024**3
    assert settings.model_weights == {"cats": 4.0, "dogs": 0.5}
    assert settings.loads_on_demand("dogs") and not settings.loads_on_demand("birds")
    assert settings.caches_results("birds")
    monkeypatch.setenv("VITSERVE_MODEL_WEIGHTS", "cats=0")
    with pytest.raises(SettingsError, match="VITSERVE_MODEL_WEIGHTS"):
        load_settings()
    for name in ("ON_DEMAND_MODELS", "MODEL_WEIGHTS", "RESULT_CACHE_MODELS", "MEMORY_BUDGET"):
        monkeypatch.delenv(f"VITSERVE_{name}")
    assert not load_settings().on_demand_models  # off unless listed


async def test_concurrent_requests_for_a_cold_version_share_one_load(
    serve_many: ServeMany, caplog: pytest.LogCaptureFixture
) -> None:
    factory = FakeFactory(build_s=0.2, cost_bytes=COST)
    caplog.set_level(logging.INFO, logger="vitserve.access")
    async with serve_many(factory) as (client, _):
        responses = await asyncio.gather(*(classify(client, "m03") for _ in range(8)))
        again = await classify(client, "m03")
        info = (await client.get("/models/m03")).json()["versions"][0]
        listing = (await client.get("/models")).json()["memory"]
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200] * 8 and again.status_code == 200
    assert factory.builds.count("m03:1") == 1  # one load for the eight requests that waited for it
    assert info["residency"] == "resident" and info["on_demand"] is True
    assert info["memory_bytes"] == COST and info["cold_start_s"] >= 0.2
    assert (info["hits"], info["misses"], info["hit_rate"]) == (1, 8, round(1 / 9, 4)) and info["last_used"]
    assert listing["budget_bytes"] == 5 * COST and listing["used_bytes"] == 2 * COST
    assert listing["evictable"] == ["m03:1"] and listing["on_demand_models"] == ["*"]
    assert metric(metrics, "vitserve_model_loads_total", model="m03", version="1", cause="demand") == 1
    assert metric(metrics, "vitserve_model_routed_total", model="m03", version="1", outcome="miss") == 8
    assert metric(metrics, "vitserve_model_memory_bytes", model="m03", version="1") == COST
    assert metric(metrics, "vitserve_cold_start_seconds_count", model="m03") == 1
    waited = [r for r in caplog.records if r.name == "vitserve.access" and "load_wait" in r.__dict__["stages_ms"]]
    assert len(waited) == 8 and all(r.__dict__["stages_ms"]["load_wait"] >= 150 for r in waited)


async def test_loading_on_demand_is_off_unless_the_model_is_listed(serve_many: ServeMany) -> None:
    async with serve_many(FakeFactory(), on_demand_models=("m04",)) as (client, _):
        listed = await classify(client, "m04")
        unlisted = await classify(client, "m05")
    assert listed.status_code == 200
    assert unlisted.status_code == 404 and unlisted.json()["error"]["code"] == "model_not_loaded"


async def test_the_least_recently_used_version_loaded_on_demand_is_evicted_first(serve_many: ServeMany) -> None:
    factory = FakeFactory(cost_bytes=COST)
    async with serve_many(factory, budget_models=4) as (client, app):  # m00 + three more
        registry: VersionRegistry = app.state.registry
        for name in ("m01", "m02", "m03", "m01"):  # m02 is now the least recently used
            assert (await classify(client, name)).status_code == 200
        assert (await classify(client, "m04")).status_code == 200
        after_one = set(registry.loaded)
        assert (await client.post("/admin/models/m03:1/load", headers=auth())).status_code == 200  # a pin
        for name in ("m05", "m06"):  # m03 is the least recently used but pinned: m01, then m04 go
            assert (await classify(client, name)).status_code == 200
        after_three = set(registry.loaded)
        metrics = (await client.get("/metrics")).text
    assert after_one == {"m00:1", "m01:1", "m03:1", "m04:1"}
    assert after_three == {"m00:1", "m03:1", "m05:1", "m06:1"}
    assert factory.peak <= 4 * COST
    evicted = {n: metric(metrics, "vitserve_model_evictions_total", model=n, version="1") for n in ("m01", "m02")}
    assert evicted == {"m01": 1, "m02": 1}


async def test_a_version_that_cannot_fit_is_a_503_with_retry_after_and_nothing_is_evicted(
    serve_many: ServeMany,
) -> None:
    factory = FakeFactory(cost_bytes=COST)
    async with serve_many(factory, budget_models=2) as (client, app):
        assert (await client.post("/admin/models/m01:1/load", headers=auth())).status_code == 200
        refused = await classify(client, "m02")
        loaded = set(app.state.registry.loaded)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    error = refused.json()["error"]
    assert error["code"] == "insufficient_memory"
    assert "m02:1 needs about 100 MiB" in error["message"] and "m00:1, m01:1" in error["message"]
    assert loaded == {"m00:1", "m01:1"} and "m02:1" not in factory.builds


async def test_a_request_waits_for_a_load_at_most_until_its_deadline(serve_many: ServeMany) -> None:
    factory = FakeFactory(build_s=1.0)
    async with serve_many(factory) as (client, app):
        registry: VersionRegistry = app.state.registry
        early = await classify(client, "m07", timeout_s=0.2)
        residence = registry.residence("m07:1")
        while registry.residence("m07:1") != "resident":
            await asyncio.sleep(0.02)
        later = await classify(client, "m07")
    assert early.status_code == 503 and early.json()["error"]["code"] == "model_loading"
    assert int(early.headers["Retry-After"]) >= 1 and residence == "loading"
    assert later.status_code == 200 and factory.builds.count("m07:1") == 1  # the load went on without its caller


async def test_a_name_loaded_on_demand_follows_a_new_production_version(
    serve_many: ServeMany, many_store: ModelStore
) -> None:
    async with serve_many(FakeFactory()) as (client, _):
        first = await classify(client, "m08")
        publish_tiny(many_store, "m08", seed=99, aliases=("production",))
        versions = []
        for _ in range(100):  # re-resolved in the background once a poll interval has passed
            versions.append((await classify(client, "m08")).json()["model"]["version"])
            if versions[-1] == 2:
                break
            await asyncio.sleep(0.02)
    assert first.json()["model"]["version"] == 1 and versions[-1] == 2


async def test_duplicate_images_are_answered_from_the_cache_and_identical_ones_in_flight_share_one_inference(
    serve_many: ServeMany,
) -> None:
    factory = FakeFactory(delay_s=0.1)
    async with serve_many(factory, result_cache_models=("m00",)) as (client, _):
        engine = factory.engines["m00:1"]
        engine.batches.clear()
        together = await asyncio.gather(*(classify(client, "m00", level=9) for _ in range(4)))
        rows_for_four = sum(engine.batches)
        hit = await classify(client, "m00", level=9)
        other = await classify(client, "m00", level=10)
        uncached = await classify(client, "m01", level=9)
        metrics = (await client.get("/metrics")).text
    timings = [r.json()["results"][0]["timings"] for r in together]
    assert rows_for_four == 1  # four identical images, one inference
    assert sorted(t.get("cache", "miss") for t in timings) == ["miss", "shared", "shared", "shared"]
    hit_timings = hit.json()["results"][0]["timings"]
    assert hit_timings["cache"] == "hit" and hit_timings["batch_size"] == 0 and hit_timings["infer_ms"] == 0
    assert hit.json()["results"][0]["predictions"] == together[0].json()["results"][0]["predictions"]
    assert "cache" not in other.json()["results"][0]["timings"]  # a new image: inferred
    assert "cache" not in uncached.json()["results"][0]["timings"]  # m01 did not opt in
    counts = {
        o: metric(metrics, "vitserve_result_cache_total", model="m00", version="1", outcome=o)
        for o in ("hit", "shared", "miss")
    }
    assert counts == {"hit": 1, "shared": 3, "miss": 2}


# ----- 20 models, a budget for 5, Zipf traffic ---------------------------------------------------------------------

ZIPF_S = 1.3  # m00 takes 39 % of the requests, m01 15 %, …, m19 0.8 %
RATE = 100.0  # requests a second, all models together
ROUND_S = 1.5
ROUNDS = 6
HOT = "m00"  # rank 1: the served default model; m19 (pinned) is the last, the others load on demand
# The fake device: a batch takes 1 ms + 3 ms per image (a CPU engine's time grows with the batch); a build 20 ms.
DEVICE = {"delay_s": 0.001, "row_s": 0.003, "build_s": 0.02}
# The operator's share for the model that carries most of the traffic (the others keep weight 1).
HOT_WEIGHT = 10.0
ATTEMPTS = 3  # of the p99 comparison (see the test's docstring)


def zipf_schedule(seed: int) -> list[tuple[float, str]]:
    """Poisson arrivals at ``RATE`` for ``ROUND_S``, each for a model drawn by Zipf rank (m00 first)."""
    weights = np.array([1 / (rank**ZIPF_S) for rank in range(1, len(MODELS) + 1)])
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / RATE, size=int(RATE * ROUND_S * 2)))
    times = times[times < ROUND_S]
    picks = rng.choice(len(MODELS), size=len(times), p=weights / weights.sum())
    return [(float(t), MODELS[i]) for t, i in zip(times, picks, strict=True)]


async def replay(classifier: Classifier, schedule: list[tuple[float, str]]) -> list[tuple[str, float, str]]:
    """Send each request at its time (open loop) through the classify stages; (model, seconds, outcome code)."""
    pixels = np.zeros((3, 32, 32), dtype=np.float32)
    start = time.monotonic() + 0.05

    async def one(at: float, name: str) -> tuple[str, float, str]:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        arrived = time.monotonic()
        inputs = ClassifyInputs([ImageInput(pixels=pixels)], top_k=1, model=name, client=name)
        try:
            await classifier.classify(inputs, top_k=None, model=None, timeout_s=None, arrived=arrived)
            code = "ok"
        except ServiceError as err:
            code = err.code
        return name, time.monotonic() - arrived, code

    return await asyncio.gather(*(one(at, name) for at, name in schedule))


def p99(results: list[tuple[str, float, str]], name: str) -> float:
    return float(np.percentile([s for n, s, code in results if n == name and code == "ok"], 99))


@pytest.mark.slow
async def test_zipf_traffic_over_twenty_models_with_a_budget_for_five(serve_many: ServeMany) -> None:
    """m00 served, m19 pinned, 18 models loaded on demand into the three places left, under Zipf traffic: no request
    fails but documented 503s; the memory never exceeds the budget; every eviction takes the least recently used of
    the evictable versions, never a pinned or served one; and m00's p99 stays within 1.5× of its p99 alone (its
    traffic only, same arrival times): the scheduler takes the other models' batches in turn with its own, one
    image each while m00 is active. The two are measured in alternating rounds, so that load from outside the test
    falls on both alike; if the p99s still disagree, the comparison is measured again, up to ``ATTEMPTS`` times (a
    shared machine's burst of load can take one run's few slowest requests; without the scheduler, first come first
    served, the ratio measured 2 to 3 every time)."""
    factory = FakeFactory(**DEVICE, cost_bytes=COST)
    async with serve_many(factory, model_weights={HOT: HOT_WEIGHT}) as (client, app):
        registry: VersionRegistry = app.state.registry
        classifier: Classifier = app.state.classifier
        assert (await client.post("/admin/models/m19:1/load", headers=auth())).status_code == 200
        evictions = watch_evictions(registry)
        used: list[int] = []
        sampler = asyncio.create_task(sample(lambda: used.append(registry.residency.used)))
        figures: list[str] = []
        for attempt in range(ATTEMPTS):
            alone, mixed = [], []
            for r in range(ROUNDS):
                schedule = zipf_schedule(seed=100 * attempt + r)
                alone += await replay(classifier, [(t, name) for t, name in schedule if name == HOT])
                mixed += await replay(classifier, schedule)
            codes = Counter(code for _, _, code in mixed + alone)
            assert set(codes) <= {"ok", "model_loading", "insufficient_memory"}, codes
            hot_alone, hot_mixed = p99(alone, HOT), p99(mixed, HOT)
            figures.append(f"{HOT} p99 {hot_mixed * 1e3:.1f} ms mixed, {hot_alone * 1e3:.1f} ms alone")
            if hot_mixed <= 1.5 * hot_alone:
                break
        sampler.cancel()
        loaded = set(registry.loaded)
        hit_rate = {ref: use.hit_rate for ref, use in registry.residency.uses.items()}
    assert codes["ok"] >= 0.99 * len(mixed + alone), codes
    assert max(used) <= 5 * COST and factory.peak <= 5 * COST  # the margin is 0 here: the costs are exact
    assert len(evictions) > 20 and {"m00:1", "m19:1"} <= loaded
    assert hit_rate["m00:1"] == hit_rate["m19:1"] == 1.0  # never evicted
    assert hot_mixed <= 1.5 * hot_alone, figures


def watch_evictions(registry: VersionRegistry) -> list[str]:
    """Check each eviction as it starts: the victim is the least recently used evictable version, neither pinned
    nor served. Returns the list the victims are appended to."""
    victims: list[str] = []
    evict = registry._evict

    async def checked(ref: str) -> None:
        evictable = registry.evictable()
        assert ref in evictable and ref not in registry.pins and ref not in registry.serving.values()
        last_use = {r: registry.residency.use(r).last_used_mono for r in evictable}
        assert last_use[ref] == min(last_use.values()), f"evicted {ref}, not the least recently used: {last_use}"
        victims.append(ref)
        await evict(ref)

    registry._evict = checked  # type: ignore[method-assign]
    return victims


async def sample(record: Callable[[], None], every_s: float = 0.005) -> None:
    while True:
        record()
        await asyncio.sleep(every_s)
