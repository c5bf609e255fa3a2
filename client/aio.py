"""``AsyncClient``: the asyncio client, the same calls as ``Client`` awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from vitserve.client.exchange import (
    ImageSource,
    RetryPolicy,
    as_sources,
    checked,
    classify_request,
    connection_failed,
    read_source,
)
from vitserve.client.results import Classification, ModelInfo


class AsyncClient:
    """A vitserve server at ``base_url``; ``async with AsyncClient(url) as client``. Arguments as ``Client``'s."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=headers, transport=transport)

    async def classify(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        top_k: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """As ``Client.classify``; files are read off the event loop."""
        sources = as_sources(images)
        data = [await asyncio.to_thread(read_source, source) for source in sources]
        kwargs = classify_request(data, top_k=top_k, model=model, timeout_s=timeout_s)
        return Classification.from_json(await self._request("POST", "/classify", **kwargs))

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_json(m) for m in (await self._request("GET", "/models"))["models"]]

    async def model(self, name: str) -> ModelInfo:
        return ModelInfo.from_json(await self._request("GET", f"/models/{name}"))

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError as err:
            raise connection_failed(err, self.base_url) from err

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                raise connection_failed(err, self.base_url) from err
            delay = self.retry.delay_s(response, attempt)
            if delay is None:
                return checked(response)
            attempt += 1
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
