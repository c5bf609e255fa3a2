"""The client's retry policy on 503 (Retry-After honoured, bounded) and its error typing, on scripted answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from vitserve.client import AsyncClient, Client, RetryPolicy, ServerError, Unavailable

OK = {"model": {"name": "m", "version": 1}, "results": [], "total_ms": 1.0}


def scripted(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    replies: Iterator[httpx.Response] = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(replies)

    return httpx.MockTransport(handle), seen


def busy(retry_after: str | None = "0") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"error": {"code": "overloaded", "message": "queue full"}}, headers=headers)


def test_503_is_retried_after_retry_after_then_succeeds() -> None:
    transport, seen = scripted(busy(), busy(), httpx.Response(200, json=OK))
    with Client("http://test", transport=transport) as client:
        result = client.classify(b"x")
    assert len(seen) == 3 and result.model == "m"


def test_retries_are_bounded_and_waits_capped() -> None:
    transport, seen = scripted(*[busy("100")] * 3)
    started = time.monotonic()
    retry = RetryPolicy(retries=2, max_wait_s=0.05)
    with Client("http://test", transport=transport, retry=retry) as client, pytest.raises(Unavailable) as err:
        client.classify(b"x")
    assert len(seen) == 3 and time.monotonic() - started < 1.0  # Retry-After 100 s capped at 0.05 s
    assert (err.value.status_code, err.value.code, err.value.retry_after_s) == (503, "overloaded", 100.0)


def test_no_retry_for_other_errors_and_unknown_bodies() -> None:
    transport, seen = scripted(httpx.Response(502, text="bad gateway"))
    with Client("http://test", transport=transport) as client, pytest.raises(ServerError) as err:
        client.models()
    assert len(seen) == 1 and err.value.status_code == 502 and "bad gateway" in err.value.message


@pytest.mark.anyio
async def test_async_client_retries_the_same_way() -> None:
    answers = iter([busy(None), httpx.Response(200, json=OK)])
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    retry = RetryPolicy(backoff_s=0.01)
    async with AsyncClient("http://test", transport=httpx.MockTransport(handle), retry=retry) as client:
        result = await client.classify([b"a", b"b"], top_k=2)
    assert len(seen) == 2 and result.version == 1
    assert seen[0].url.params["top_k"] == "2" and b'name="file"' in seen[0].content
