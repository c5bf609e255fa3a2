"""Fixtures for the deploy/ tests."""

from __future__ import annotations

import pytest

from tests.deploy.k8s_objects import BUILDS, DEPLOY, Manifest, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """Each build in BUILDS → its rendered objects."""
    return {build: render(DEPLOY / build) for build in BUILDS}
