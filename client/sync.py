"""``Client``: the blocking client."""

from __future__ import annotations

import time
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


class Client:
    """A vitserve server at ``base_url`` (``http://host:port``). Use it as a context manager, or ``close()`` it.

    ``timeout_s`` bounds each HTTP exchange; ``retry`` says how 503s are retried; ``transport`` replaces
    httpx's (tests); ``headers`` go with every request (e.g. ``X-Request-Id``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers, transport=transport)

    def classify(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        top_k: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """Top-k labels for one image or several (paths, bytes, http(s) URLs), one result per image in order.
        ``model``: name, name:version or name@alias (default: the server's default model)."""
        sources = as_sources(images)
        data = [read_source(source) for source in sources]
        kwargs = classify_request(data, top_k=top_k, model=model, timeout_s=timeout_s)
        return Classification.from_json(self._request("POST", "/classify", **kwargs))

    def models(self) -> list[ModelInfo]:
        """Every model in the server's store, its versions and what is loaded."""
        return [ModelInfo.from_json(m) for m in self._request("GET", "/models")["models"]]

    def model(self, name: str) -> ModelInfo:
        return ModelInfo.from_json(self._request("GET", f"/models/{name}"))

    def ready(self) -> bool:
        """Whether the server is ready (a model loaded and warm, not draining); never raises for a 503."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError as err:
            raise connection_failed(err, self.base_url) from err

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                raise connection_failed(err, self.base_url) from err
            delay = self.retry.delay_s(response, attempt)
            if delay is None:
                return checked(response)
            attempt += 1
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
