"""The ``face`` fixture: each client test runs once on ``Client`` and once on ``AsyncClient``."""

from __future__ import annotations

import pytest

from tests.client.scenario import Face


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> Face:
    return Face(request.param)
