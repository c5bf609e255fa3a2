"""Serves the pages and their static files (HTML, CSS, plain JavaScript modules; no build step, no CDN).

Only the files named in ``ASSETS`` exist: they are read from the package once, when the router is built, and a
request names a key of that table, never a path. Every response carries a strict Content-Security-Policy:
scripts, styles, images and requests from this origin only (plus ``blob:`` images, the page's previews of the
user's own files), no inline script or style, no framing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from vitserve.service.core.errors import error_body

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release's pages are seen at once
}
STATIC_PREFIX = "/ui/static/"
# file name → media type: everything the pages load.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "models.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "classify.js": "text/javascript; charset=utf-8",
    "models.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGES = {"/": "index.html", "/ui/models": "models.html"}


def read_assets() -> dict[str, bytes]:
    """Every file of ``ASSETS`` from the installed package (``FileNotFoundError`` names a missing one)."""
    folder = resources.files(__package__ or "vitserve.service.pages").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


def pages_router() -> APIRouter:
    """``GET /``, ``GET /ui/models`` and ``GET /ui/static/<file>``, with the security headers above."""
    assets = read_assets()
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        return Response(assets[name], media_type=ASSETS[name], headers=SECURITY_HEADERS)

    def page(name: str) -> Callable[[], Awaitable[Response]]:
        async def endpoint() -> Response:
            return serve(name)

        return endpoint

    for path, name in PAGES.items():
        router.add_api_route(path, page(name), methods=["GET"], response_class=Response)

    @router.get(STATIC_PREFIX + "{name}", response_class=Response)
    async def static(name: str) -> Response:
        if name not in assets:
            return JSONResponse(error_body("not_found", f"no static file {name!r}"), status_code=404)
        return serve(name)

    return router
