"""Per-client rates: how fast one client may send requests, and how much decoding CPU it may use.

Admission (``service.admission``) bounds what a client holds *at once*; these bound what it takes *over time*.
A client that gets cheap answers as fast as it can send, or that sends the most expensive image the caps allow
again and again, would otherwise take CPU from everyone else however few slots it holds.

Each client has a token bucket that refills at ``rate`` a second up to ``burst``. A request takes one token when
it arrives, if there is one. Decoding is charged when its cost is known, in full, possibly into debt (a request
with 32 huge images costs what it costs), and a client in debt may start no new request until it is repaid.
A client refused is told how long to wait (429 with Retry-After).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from vitserve.service.core.errors import RateLimited
from vitserve.service.core.metrics import Metrics


class ClientBudgets:
    """Token buckets by client identity; used from the event loop only (no locking needed).

    At most ``max_clients`` buckets are kept, the least recently seen dropped first: a dropped client starts
    again with a full bucket, which is what it would have after being quiet for ``burst / rate`` seconds."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0 or max_clients < 1:
            raise ValueError(f"invalid ClientBudgets: rate {rate}, burst {burst}, max_clients {max_clients}")
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (level, at)

    def wait_s(self, client: str, need: float = 0.0) -> float:
        """Seconds until ``client``'s bucket holds ``need`` (0: until it is out of debt); 0 when it does now."""
        level = self.level(client)
        return 0.0 if level >= need else (need - level) / self.rate

    def charge(self, client: str, amount: float) -> None:
        """Take ``amount`` from ``client``'s bucket (into debt if need be)."""
        self._buckets[client] = (self.level(client) - amount, self.clock())
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def level(self, client: str) -> float:
        level, at = self._buckets.get(client, (self.burst, 0.0))
        return min(self.burst, level + (self.clock() - at) * self.rate)

    def clients(self) -> Iterable[str]:
        return self._buckets.keys()


def client_id(headers: Iterable[tuple[bytes, bytes]], peer: str | None, header: str | None) -> str:
    """The client's identity: the first address in ``header`` when a trusted proxy sets it (e.g.
    ``x-forwarded-for``), else the peer address. Only the identity's first 64 characters count."""
    if header:
        wanted = header.lower().encode("latin-1")
        for name, value in headers:
            if name.lower() == wanted:
                given = value.decode("latin-1").split(",")[0].strip()
                if given:
                    return given[:64]
                break
    return peer or ""


def take_request(budgets: ClientBudgets, client: str, metrics: Metrics) -> None:
    """One request's token from ``client``'s bucket, or ``RateLimited`` with the wait for the next one."""
    wait_s = budgets.wait_s(client, need=1)
    if wait_s > 0:
        metrics.rejections.labels("client_rate").inc()
        raise RateLimited(
            f"too many requests from this client (at most {budgets.rate:g} a second, bursts of {budgets.burst:g}); "
            "retry after the Retry-After seconds",
            retry_after_s=wait_s,
        )
    budgets.charge(client, 1)
