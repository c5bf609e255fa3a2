"""``create_app(settings)``: the FastAPI application, its resources on ``app.state``, its lifespan.

Start-up (the lifespan, the one place that sets MindSpore's global context): GRAPH_MODE on the configured
device, the compile cache for the start-up model, then the default model is loaded, warmed for every batch
size and swapped in; only then does ``/readyz`` say ready. A default model that cannot be loaded stops the
start-up with its reason. Shutdown: readiness false, every version's queue drained within ``drain_timeout_s``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from vitserve.model_store import Card, ModelStore
from vitserve.runtime.engine import build_engine, resolve_kind
from vitserve.service.classify import Classifier
from vitserve.service.core.admission import Admission, client_limit
from vitserve.service.core.body_budget import BodyBudget
from vitserve.service.core.client_budgets import ClientBudgets, always
from vitserve.service.core.live_stats import LiveStats
from vitserve.service.core.metrics import Metrics
from vitserve.service.http import admin_api, api, fleet_api, stats_api
from vitserve.service.http.errors import install_error_handlers
from vitserve.service.http.hardening import install_hardening
from vitserve.service.http.middleware import BodyLimitMiddleware, ServingMiddleware
from vitserve.service.http.request_middleware import RequestMiddleware
from vitserve.service.inputs.decode_pool import DecodePool
from vitserve.service.inputs.fetch import Resolver, UrlFetcher, UrlPolicy, system_resolver
from vitserve.service.lifecycle.follower import StoreFollower
from vitserve.service.lifecycle.versions import EngineFactory, VersionRegistry
from vitserve.service.observability.tracing import Tracer
from vitserve.service.pages.routes import pages_router
from vitserve.service.settings import Settings
from vitserve.service.v2.router import build_router as v2_router
from vitserve.vit.decode import DecodeLimits

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    draining: bool = False  # set at SIGTERM (``vitserve serve``) or when the lifespan ends
    startup_error: str | None = None


@dataclass
class Resources:
    """What one app owns; kept on ``app.state`` and released by the lifespan."""

    settings: Settings
    store: ModelStore
    metrics: Metrics
    lifecycle: Lifecycle
    device: ThreadPoolExecutor  # the one thread for engine (MindSpore) calls, see service.lifecycle.versions
    registry: VersionRegistry
    pool: DecodePool
    classifier: Classifier
    real_engine: bool
    follower: StoreFollower  # follows the store's aliases and canaries, renews this replica's lease
    client_rates: ClientBudgets | None  # requests per client (REST and gRPC), None → no limit

    def close(self) -> None:
        self.pool.close()
        self.device.shutdown(wait=False)


def create_app(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    resolver: Resolver = system_resolver,
    url_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The service. ``engine_factory(card, store, settings) -> Engine`` replaces the MindSpore engine (and the
    MindSpore context set-up) in tests; ``resolver``/``url_transport`` replace DNS and the URL client's I/O."""
    fetcher = UrlFetcher(_url_policy(settings), resolver=resolver, transport=url_transport)
    res = _resources(settings, engine_factory, fetcher)
    app = FastAPI(
        title="vitserve",
        summary="Vision Transformer image classification",
        version="0.1.0",
        lifespan=_lifespan(res),
    )
    for name in ("settings", "store", "metrics", "registry", "classifier", "lifecycle", "follower", "client_rates"):
        setattr(app.state, name, getattr(res, name))
    install_error_handlers(app)
    app.include_router(api.router)
    app.state.live_stats = live_stats = LiveStats()  # /stats and the stored figures are API; the pages are not
    app.include_router(stats_api.router)
    if settings.ui:
        app.include_router(pages_router())
    app.include_router(v2_router())  # Open Inference Protocol: /v2 REST routes, gRPC when grpc_port is set
    if settings.admin_token:
        app.include_router(admin_api.router, include_in_schema=False)  # not in the public /openapi.json
        app.include_router(fleet_api.router, include_in_schema=False)

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes if path.startswith("/admin/") else settings.max_body_bytes

    # One budget for the bodies of both doors: the gRPC server charges its messages to it too.
    app.state.body_budget = body_budget = BodyBudget(settings.max_bodies_bytes)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=body_limit,
        budget=body_budget,
        budgeted=lambda path: not path.startswith("/admin/"),  # one token holder's upload: its own cap
    )
    # Admin gate, per-client request rate, body-read deadline: before any body byte is read.
    install_hardening(app, settings, res.metrics, res.client_rates)
    app.add_middleware(ServingMiddleware, metrics=res.metrics, is_draining=lambda: res.lifecycle.draining)
    # Outermost: request ids, access log, traces and the request observers (per-version series, /stats) cover
    # every answer, refusals and 500s included.
    app.state.tracer = Tracer.otlp(settings.otlp_endpoint) if settings.otlp_endpoint else None
    observers = (res.metrics.per_version, live_stats)
    app.add_middleware(RequestMiddleware, observers=observers, tracer=lambda: app.state.tracer)
    return app


def _resources(settings: Settings, engine_factory: EngineFactory | None, fetcher: UrlFetcher) -> Resources:
    metrics = Metrics()
    store = ModelStore(settings.store_root)
    factory = engine_factory or (lambda card, store, options: build_engine(settings.engine, card, store, options))
    device = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
    registry = VersionRegistry(store, settings, factory, metrics, device)
    pool = DecodePool(settings.decode_workers, DecodeLimits(settings.max_body_bytes, settings.max_image_pixels))
    admission = Admission(
        settings.max_in_flight,
        client_limit(settings.max_in_flight, settings.client_share, settings.max_images),
        settings.max_url_fetches,
        metrics,
    )
    # The per-client rates bind only while the replica is contended for the client, unless they are fixed quotas.
    binds = always if settings.client_rates_fixed else admission.contended
    decode_binds = always if settings.client_rates_fixed else admission.others_active
    classifier = Classifier(
        registry,
        pool,
        fetcher,
        metrics,
        admission,
        max_top_k=settings.max_top_k,
        request_timeout_s=settings.request_timeout_s,
        decode_budgets=(
            ClientBudgets(settings.client_decode_cpu, settings.client_decode_burst_s, binds=decode_binds)
            if settings.client_decode_cpu > 0
            else None
        ),
    )
    return Resources(
        settings,
        store,
        metrics,
        Lifecycle(),
        device,
        registry,
        pool,
        classifier,
        real_engine=engine_factory is None,
        follower=StoreFollower(registry, settings),
        client_rates=(
            ClientBudgets(settings.client_rate, settings.client_burst, binds=binds)
            if settings.client_rate > 0
            else None
        ),
    )


def _url_policy(settings: Settings) -> UrlPolicy:
    return UrlPolicy(
        max_bytes=settings.max_body_bytes,
        allow_hosts=settings.url_allow_hosts,
        allow_loopback=settings.url_allow_loopback,
        connect_timeout_s=settings.url_connect_timeout_s,
        timeout_s=settings.url_timeout_s,
        max_redirects=settings.url_max_redirects,
    )


def _lifespan(res: Resources) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await _start(res.registry, res.settings, real_engine=res.real_engine)
            await res.follower.start()
        except Exception as err:
            res.lifecycle.startup_error = str(err)
            log.error("start-up failed: %s", err)
            res.close()
            raise
        try:
            yield
        finally:
            res.lifecycle.draining = True
            log.info("draining: waiting up to %.0f s for in-flight work", res.settings.drain_timeout_s)
            await res.follower.stop()  # no swap during the drain; the lease goes with this replica
            await res.registry.close()
            res.close()
            if app.state.tracer is not None:
                app.state.tracer.shutdown()  # flushes the spans still batched
            log.info("drained")

    return lifespan


async def _start(registry: VersionRegistry, settings: Settings, *, real_engine: bool) -> None:
    """Load, warm and serve the default model (with MindSpore's context and compile cache for a real engine)."""

    card = await registry.store_calls.run(registry.store.resolve, settings.default_model)
    if real_engine:
        configure_mindspore(settings, card)
    try:
        await registry.load(card.ref, serve=True)
        # What start-up allocated (libraries, the model) lives as long as the process: kept out of the garbage
        # collector's full passes, which otherwise walk it all and stall the event loop (~0.8 s measured).
        gc.collect()
        gc.freeze()
    finally:
        # Cache only the start-up graphs: MindSpore keys its cache by compile order within a process, so a
        # version loaded later in another order must not read (or write) the start-up model's entries.
        os.environ.pop("MS_COMPILER_CACHE_ENABLE", None)


def compile_cache_key(settings: Settings, card: Card, mindspore_version: str) -> str:
    """The compile cache's folder name: everything the start-up graphs depend on. MindSpore keys its cache by
    compile order within a process, and each engine kind compiles different graphs in a different order (the
    MindSpore engine its buckets, the CPU engines the export), so the engine kind is part of the key."""
    sizes = "-".join(map(str, settings.batch_sizes))
    engine = resolve_kind(settings.engine, settings.device_target)
    return (
        f"{card.name}-{card.version}-{card.sha256[:16]}-{settings.device_target}-{engine}-b{sizes}"
        f"-ms{mindspore_version}"
    )


def configure_mindspore(settings: Settings, card: Card) -> None:
    """GRAPH_MODE on the device, and a compile cache keyed by what the compiled graphs depend on."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        ms.set_device(settings.device_target)
    except RuntimeError as err:  # already set in this process (a second app in tests): keep it
        log.debug("set_device: %s", err)
    entry = sys.argv[0] if sys.argv else ""
    if entry and not os.path.isfile(entry):
        # MindSpore's cache reads the entry script to hash what it imports; with none to read (``python -c``,
        # ``python -m cProfile -m ...``) the first compilation, an export included, fails instead.
        log.warning("MindSpore compile cache off: the entry script %r is not a file MindSpore can read", entry)
        return
    path = settings.cache_dir / compile_cache_key(settings, card, ms.__version__)
    path.mkdir(parents=True, exist_ok=True)
    # The environment variables are MindSpore 2.10's interface (set_context's cache options are deprecated);
    # the path is read once per process, at the first compilation.
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = str(path)
    log.info("MindSpore: GRAPH_MODE on %s, compile cache %s", settings.device_target, path)
