"""Admission: how many images may be in progress at once, overall, per client, and fetching URLs.

Three budgets, checked together when a request arrives (after its body is parsed, before any image work):

- ``max_in_flight`` images overall (fetching, decoding, queued or running), so a burst cannot pile up
  unbounded in front of the decode pool or hold every body in memory;
- ``client_limit`` of them per client, so one client (by peer address, or by a header a trusted proxy sets)
  cannot take the whole budget and turn everyone else away;
- ``max_url_fetches`` URL inputs being fetched, so slow upstreams (each may take the fetch timeout) cannot hold
  every slot while the images sent inline wait.

A request beyond any of them is ``Overloaded`` (503 with Retry-After) at once, and holds nothing.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from vitserve.service.core.errors import Overloaded
from vitserve.service.core.metrics import Metrics


@dataclass
class Admission:
    """The three budgets above; used from the event loop only (no locking needed)."""

    max_in_flight: int
    client_limit: int
    max_url_fetches: int
    metrics: Metrics
    in_flight: int = 0
    urls: int = 0
    by_client: Counter[str] = field(default_factory=Counter)

    @contextlib.contextmanager
    def admit(self, client: str, images: int, urls: int) -> Iterator[None]:
        """Hold ``images`` slots (``urls`` of them URL fetches) for ``client`` until the block ends."""
        self._check(client, images, urls)
        self.in_flight += images
        self.urls += urls
        self.by_client[client] += images
        try:
            yield
        finally:
            self.in_flight -= images
            self.urls -= urls
            self.by_client[client] -= images
            if self.by_client[client] <= 0:
                del self.by_client[client]

    def _check(self, client: str, images: int, urls: int) -> None:
        if self.in_flight + images > self.max_in_flight:
            self._refuse("admission", f"{self.in_flight} images in progress (limit {self.max_in_flight})")
        held = self.by_client[client]
        if held + images > self.client_limit:
            self._refuse(
                "client_share", f"this client has {held} images in progress (its share is {self.client_limit})"
            )
        if self.urls + urls > self.max_url_fetches:
            self._refuse("url_fetches", f"{self.urls} URL inputs being fetched (limit {self.max_url_fetches})")

    def _refuse(self, reason: str, detail: str) -> None:
        self.metrics.rejections.labels(reason).inc()
        raise Overloaded(f"{detail}; retry later", retry_after_s=1)


def client_limit(max_in_flight: int, share: float, max_images: int) -> int:
    """Slots one client may hold: ``share`` of the budget, never fewer than one largest request."""
    return max(max_images, int(max_in_flight * share))
