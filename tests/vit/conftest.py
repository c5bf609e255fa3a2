"""Fixtures for the model-library tests: MindSpore's execution mode, set for a test and restored after."""

from __future__ import annotations

from collections.abc import Iterator

import mindspore as ms
import pytest

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


@pytest.fixture(params=list(MODES))
def ms_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once in GRAPH_MODE (compiled) and once in PyNative; yields "graph" or "pynative"."""
    previous = ms.get_context("mode")
    ms.set_context(mode=MODES[request.param])
    yield request.param
    ms.set_context(mode=previous)


@pytest.fixture
def graph_mode() -> Iterator[None]:
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture
def pynative_mode() -> Iterator[None]:
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)
