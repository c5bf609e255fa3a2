"""Admission: how many images may be in progress at once, overall, per client, and fetching URLs; and whether
the replica is contended, which decides when the per-client limits bind.

Checked together when a request arrives (after its body is parsed, before any image work):

- ``max_in_flight`` images overall (fetching, decoding, queued or running), so a burst cannot pile up
  unbounded in front of the decode pool or hold every body in memory (503 beyond);
- each client's fair share of them, ``max_in_flight`` ÷ the active clients (a client holding nothing may always
  bring one request, however large), so one client cannot take the whole budget and turn everyone else away
  (429 beyond). Fair, and work-conserving: it binds only while the replica is busy (over ``BUSY_FRACTION`` of
  the budget in progress with the request's images). A client alone holds the whole budget; a client over its
  share is still admitted while the replica is not busy, since nobody waits for those slots. Two greedy clients
  each end up with half: each is refused only while it holds more than its share, so the one below always gets
  the slots the other frees, whatever the number of requests either keeps trying;
- ``client_limit`` images per client, a fixed cap (``CLIENT_SHARE``; the whole budget, i.e. off, by default);
- ``max_url_fetches`` URL inputs being fetched, so slow upstreams (each may take the fetch timeout) cannot hold
  every slot while the images sent inline wait.

A client is *active* while it has images in progress or has arrived within ``window_s`` (refused requests
included: a client turned away still wants its share, and ``window_s`` outlasts the Retry-After it was given).
``contended(client)`` (another client active and the replica busy) is what makes the per-client request rate of
``service.core.client_budgets`` bind, and ``others_active(client)`` the decoding-CPU rate: a client alone is never
refused.

A refused request holds nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vitserve.service.core.errors import Overloaded, RateLimited
from vitserve.service.core.metrics import Metrics

# The replica is busy (contended) once more than this fraction of the budget is in progress: half of it queued is
# still enough to keep every batch full, so refusing beyond it costs no throughput.
BUSY_FRACTION = 0.5
# How long a client counts as active after its last request: more than the 1 s Retry-After of a refusal, so a
# client turned away is still counted when it comes back.
ACTIVE_WINDOW_S = 2.0
_MAX_SEEN = 65_536  # clients remembered as recently seen; the least recent are forgotten first


@dataclass
class Admission:
    """The budgets above; used from the event loop only (no locking needed)."""

    max_in_flight: int
    client_limit: int
    max_url_fetches: int
    metrics: Metrics
    window_s: float = ACTIVE_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    urls: int = 0
    by_client: Counter[str] = field(default_factory=Counter)
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False)  # client → last seen, oldest first

    def arrive(self, client: str) -> None:
        """``client`` sent a request: it is active for the next ``window_s`` seconds."""
        self._seen[client] = self.clock()
        self._seen.move_to_end(client)
        self._forget()

    @contextlib.contextmanager
    def admit(self, client: str, images: int, urls: int) -> Iterator[None]:
        """Hold ``images`` slots (``urls`` of them URL fetches) for ``client`` until the block ends."""
        self.arrive(client)
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

    def active(self) -> int:
        """Clients with images in progress or seen within ``window_s``."""
        self._forget()
        return len(self._seen) + sum(client not in self._seen for client in self.by_client)

    def fair_share(self) -> int:
        return max(1, self.max_in_flight // max(1, self.active()))

    def busy(self, images: int = 0) -> bool:
        """Whether more than ``BUSY_FRACTION`` of the budget would be in progress with ``images`` more."""
        return self.in_flight + images > self.max_in_flight * BUSY_FRACTION

    def contended(self, client: str) -> bool:
        """Whether ``client`` competes with others for the replica's slots now: another client is active and the
        replica is busy. The per-client request rate binds only then."""
        return self.busy() and self.others_active(client)

    def others_active(self, client: str) -> bool:
        """Whether a client other than ``client`` is active. Decoding CPU binds on this alone: the cores are what
        decoding competes for, and one client's 40-megapixel decode takes them from everyone else's small ones
        long before its images fill the slots (measured in the soak: good p99 18× unloaded when it waited for
        ``busy``)."""
        self._forget()
        return len(self.by_client) > (client in self.by_client) or len(self._seen) > (client in self._seen)

    def _check(self, client: str, images: int, urls: int) -> None:
        if self.in_flight + images > self.max_in_flight:
            self._refuse("admission", f"{self.in_flight} images in progress (limit {self.max_in_flight})")
        held = self.by_client[client]
        if held + images > self.client_limit:
            self._refuse(
                "client_share", f"this client has {held} images in progress (its share is {self.client_limit})"
            )
        share = self.fair_share()
        # A client that holds nothing is never over its share, whatever its request's size; a floor of one largest
        # request for every client let a few heavy ones fill the budget (the soak's 503s to good clients).
        if held and held + images > share and self.busy(images):
            self.metrics.rejections.labels("fair_share").inc()
            raise RateLimited(
                f"this client has {held} images in progress and the replica is busy: {self.active()} clients share "
                f"it, {share} images each; retry after the Retry-After seconds",
                retry_after_s=1,
            )
        if self.urls + urls > self.max_url_fetches:
            self._refuse("url_fetches", f"{self.urls} URL inputs being fetched (limit {self.max_url_fetches})")

    def _refuse(self, reason: str, detail: str) -> None:
        self.metrics.rejections.labels(reason).inc()
        raise Overloaded(f"{detail}; retry later", retry_after_s=1)

    def _forget(self) -> None:
        """Drop the clients not seen within ``window_s`` (the oldest are first), and any beyond ``_MAX_SEEN``."""
        horizon = self.clock() - self.window_s
        while self._seen and (len(self._seen) > _MAX_SEEN or next(iter(self._seen.values())) < horizon):
            self._seen.popitem(last=False)


def client_limit(max_in_flight: int, share: float, max_images: int) -> int:
    """Slots one client may hold under the fixed cap: ``share`` of the budget, never fewer than one largest
    request."""
    return max(max_images, int(max_in_flight * share))
