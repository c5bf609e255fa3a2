"""``Client``: the blocking face of the client. What it does is in ``exchange.Calls``; here it is only done."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from vitserve.client.exchange import Call, Calls, ClassifyOptions, ClientOptions, ReadImages, Sleep, Step, http_settings
from vitserve.client.images import ImageSource
from vitserve.client.results import Classification, ModelInfo

T = TypeVar("T")


class Client:
    """A vitserve server at ``base_url`` (``http://host:port``). Use it as a context manager, or ``close()`` it.

    ``transport`` replaces httpx's (tests); ``options`` are ``timeout_s`` (each HTTP exchange's bound),
    ``retry`` (a ``RetryPolicy`` for 503s) and ``headers`` (sent with every request), as ``ClientOptions`` says.
    """

    def __init__(
        self, base_url: str, *, transport: httpx.BaseTransport | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        self._http = httpx.Client(transport=transport, **http_settings(base_url, options))
        self._calls = Calls(self._http, options)

    def classify(
        self, images: ImageSource | Sequence[ImageSource], **options: Unpack[ClassifyOptions]
    ) -> Classification:
        """Top-k labels for one image or several, one result per image in order. An image is a local file
        (``Path`` or a binary file object), its bytes, or an http(s) URL the server fetches; a ``str`` that is
        not such a URL is refused (``ValueError``), never read as a file name. ``options``: ``top_k``,
        ``model`` (name, name:version or name@alias) and ``timeout_s``, as ``ClassifyOptions`` says."""
        return self._run(self._calls.classify(images, options))

    def models(self) -> list[ModelInfo]:
        """Every model in the server's store, its versions and what is loaded."""
        return self._run(self._calls.models())

    def model(self, name: str) -> ModelInfo:
        """One model's versions; ``ValueError`` for a ``name`` outside the store's grammar (a-z 0-9 . _ -)."""
        return self._run(self._calls.model(name))

    def ready(self) -> bool:
        """Whether the server is ready (a model loaded and warm, not draining); never raises for a 503."""
        return self._run(self._calls.ready())

    def _run(self, call: Call[T]) -> T:
        reply: Any = None
        try:
            while True:
                reply = self._perform(call.send(reply))
        except StopIteration as done:
            return done.value

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        if isinstance(step, ReadImages):
            return step.read()
        try:
            return self._http.send(step)
        except httpx.TransportError as err:
            return err  # the call decides what a failed send means

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
