"""A headless Chromium for the page tests: Debian's ``chromium`` package (scripts/install.sh installs it),
driven by Playwright, with every request to another origin blocked and recorded, and CSP reports collected."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.e2e_server import REPO

ARTEFACTS = Path(os.environ.get("VITSERVE_ARTEFACTS", REPO / "artefacts")) / "browser"
# The binary itself: Debian's /usr/bin/chromium is a wrapper script that does not exec it.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")


def chromium_path() -> str:
    """The system Chromium; a CI run without one fails (its set-up installs it), elsewhere the test skips."""
    for name in CANDIDATES:
        found = shutil.which(name) or (name if Path(name).is_file() and os.access(name, os.X_OK) else None)
        if found:
            return found
    message = "no system chromium: run `bash scripts/install.sh dev` as root (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Watch:
    """What a page did that it must not: requests off 127.0.0.1 (blocked), CSP violations, script errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def route(r: Any) -> None:
            if r.request.url.startswith((self.origin + "/", "blob:", "data:")):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]


@contextmanager
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, name: str) -> Path:
    """Full-page PNG under artefacts/browser/ (git-ignored); returns its path."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
