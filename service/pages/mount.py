"""Adds the live figures (``/stats``), the stored figures, and (unless ``settings.ui`` is off) the pages."""

from __future__ import annotations

from fastapi import FastAPI

from vitserve.service.http import stats_api
from vitserve.service.http.live_stats import LiveStats, LiveStatsMiddleware
from vitserve.service.pages.routes import pages_router
from vitserve.service.settings import Settings


def mount_pages(app: FastAPI, settings: Settings) -> None:
    """Call once from ``create_app``: ``app.state.live_stats``, its middleware and sampler, the routes."""
    app.state.live_stats = LiveStats()
    app.add_middleware(LiveStatsMiddleware, stats=app.state.live_stats)
    app.include_router(stats_api.router)
    if settings.ui:
        app.include_router(pages_router())
