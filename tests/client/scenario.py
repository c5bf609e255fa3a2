"""Scripted servers for the client's tests, and one runner for both faces, so that every scenario runs on
``Client`` and on ``AsyncClient`` alike (the ``face`` fixture in this folder's conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from vitserve.client import AsyncClient, Client

OK = {"model": {"name": "m", "version": 1}, "results": [], "total_ms": 1.0}
MODEL = {"name": "tiny", "serving_version": 1, "aliases": {}, "versions": []}


class Server:
    """Answers each request with the next of ``answers`` (an exception is raised, as a transport would) and
    keeps every request it saw; one request more than scripted fails the test."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.seen: list[httpx.Request] = []
        self._answers: Iterator[httpx.Response | Exception] = iter(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = next(self._answers, None)
        if answer is None:
            raise AssertionError(f"unscripted request {request.method} {request.url}")
        if isinstance(answer, Exception):
            raise answer
        return answer


def busy(retry_after: str | None = "0") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"error": {"code": "overloaded", "message": "queue full"}}, headers=headers)


class Face:
    """One face of the client: ``face(server, action)`` is ``action(client)`` on a ``Client``, or awaited on an
    ``AsyncClient``, over ``server``; ``options`` go to the client's constructor."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(
        self, server: Server, action: Callable[[Any], Any], *, base_url: str = "http://test", **options: Any
    ) -> Any:
        transport = httpx.MockTransport(server)
        if self.name == "sync":
            with Client(base_url, transport=transport, **options) as client:
                return action(client)

        async def run() -> Any:
            async with AsyncClient(base_url, transport=transport, **options) as client:
                return await action(client)

        return asyncio.run(run())
