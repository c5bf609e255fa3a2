"""Adds the live figures (``/stats``), the stored figures, and (unless ``settings.ui`` is off) the pages."""

from __future__ import annotations

from fastapi import FastAPI

from vitserve.service.http import stats_api
from vitserve.service.http.live_stats import LiveStats
from vitserve.service.pages.routes import pages_router
from vitserve.service.settings import Settings


def mount_pages(app: FastAPI, settings: Settings) -> LiveStats:
    """Call once from ``create_app``: ``app.state.live_stats`` and its sampler, the routes. Returns the live
    stats, a request observer that ``create_app`` hands to the request middleware."""
    app.state.live_stats = LiveStats()
    app.include_router(stats_api.router)
    if settings.ui:
        app.include_router(pages_router())
    return app.state.live_stats
