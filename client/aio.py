"""``AsyncClient``: the asyncio face of the client, ``Client``'s calls awaited. What it does is in
``exchange.Calls``; here it is only done, files read off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from vitserve.client.exchange import Call, Calls, ClassifyOptions, ClientOptions, ReadImages, Sleep, Step, http_settings
from vitserve.client.images import ImageSource
from vitserve.client.results import Classification, ModelInfo

T = TypeVar("T")


class AsyncClient:
    """A vitserve server at ``base_url``; ``async with AsyncClient(url) as client``. Arguments as ``Client``'s."""

    def __init__(
        self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        self._http = httpx.AsyncClient(transport=transport, **http_settings(base_url, options))
        self._calls = Calls(self._http, options)

    async def classify(
        self, images: ImageSource | Sequence[ImageSource], **options: Unpack[ClassifyOptions]
    ) -> Classification:
        """As ``Client.classify``."""
        return await self._run(self._calls.classify(images, options))

    async def models(self) -> list[ModelInfo]:
        return await self._run(self._calls.models())

    async def model(self, name: str) -> ModelInfo:
        return await self._run(self._calls.model(name))

    async def ready(self) -> bool:
        return await self._run(self._calls.ready())

    async def _run(self, call: Call[T]) -> T:
        reply: Any = None
        try:
            while True:
                reply = await self._perform(call.send(reply))
        except StopIteration as done:
            return done.value

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        if isinstance(step, ReadImages):
            return await asyncio.to_thread(step.read)
        try:
            return await self._http.send(step)
        except httpx.TransportError as err:
            return err

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
