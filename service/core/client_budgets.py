"""Per-client rates: how fast one client may send requests, and how much decoding CPU it may use.

Admission (``service.core.admission``) bounds what a client holds *at once*; these bound what it takes *over
time*. A client that gets cheap answers as fast as it can send, or that sends the most expensive image the caps
allow again and again, would otherwise take CPU from everyone else however few slots it holds.

Each client has a token bucket that refills at ``rate`` a second up to ``burst``. A request takes one token when
it arrives, if there is one. Decoding is charged when its cost is known, in full, possibly into debt (a request
with 32 huge images costs what it costs).

The buckets are shares, not caps: they bind only while ``binds(client)`` says the replica is contended for that
client (the service passes ``Admission.contended``: another client is active and the replica is busy). A client
over its bucket on a replica with capacity to spare *borrows* it: its request is let through without a token,
and the decoding debt it carries is forgiven (capacity nobody else wanted is not owed back; were it kept, a
client that had the replica to itself for a minute would be locked out as soon as a second client came). So a
client alone may use the whole replica, and under contention each client is held to its bucket: a client over
it (its request token, or in decoding debt) is refused with 429 and told how long to wait (Retry-After), while
the others' requests go on. ``binds`` always true makes the buckets fixed per-client quotas
(``CLIENT_RATES_FIXED``).

Why buckets that lend rather than a scheduler (deficit round robin over per-client queues): the buckets already
answer before the body is read, with a Retry-After, and a client's contention is one comparison away in the
admission budget; a scheduler would hold requests (and their bodies) in queues the admission budget exists to
keep short. The price of lending: on a replica that is not busy, one client's cheap requests (refusals, bad
bodies) are not limited either; they do no image work, and the body and JSON caps bound each one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from vitserve.service.core.errors import RateLimited
from vitserve.service.core.metrics import Metrics


def always(client: str) -> bool:
    """``binds`` for fixed quotas: the bucket holds every client to its rate, contended or not."""
    return True


class ClientBudgets:
    """Token buckets by client identity; used from the event loop only (no locking needed).

    At most ``max_clients`` buckets are kept, the least recently seen dropped first: a dropped client starts
    again with a full bucket, which is what it would have after being quiet for ``burst / rate`` seconds."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        binds: Callable[[str], bool] = always,
        max_clients: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0 or max_clients < 1:
            raise ValueError(f"invalid ClientBudgets: rate {rate}, burst {burst}, max_clients {max_clients}")
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self.binds = binds  # whether a client over its bucket is refused now (else it borrows spare capacity)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (level, at)

    def wait_s(self, client: str, need: float = 0.0) -> float:
        """Seconds until ``client``'s bucket holds ``need`` (0: until it is out of debt); 0 when it does now."""
        level = self.level(client)
        return 0.0 if level >= need else (need - level) / self.rate

    def charge(self, client: str, amount: float) -> None:
        """Take ``amount`` from ``client``'s bucket (into debt if need be)."""
        self._set(client, self.level(client) - amount)

    def forgive(self, client: str) -> None:
        """Clear ``client``'s debt: what it borrowed while nobody else wanted it is not owed back."""
        if self.level(client) < 0:
            self._set(client, 0.0)

    def level(self, client: str) -> float:
        level, at = self._buckets.get(client, (self.burst, 0.0))
        return min(self.burst, level + (self.clock() - at) * self.rate)

    def clients(self) -> Iterable[str]:
        return self._buckets.keys()

    def _set(self, client: str, level: float) -> None:
        self._buckets[client] = (level, self.clock())
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


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
    """One request's token from ``client``'s bucket; without one, the request borrows spare capacity unless the
    bucket binds now, and is then ``RateLimited`` with the wait for the next token."""
    wait_s = budgets.wait_s(client, need=1)
    if wait_s == 0:
        budgets.charge(client, 1)
    elif budgets.binds(client):
        metrics.rejections.labels("client_rate").inc()
        raise RateLimited(
            f"too many requests from this client while others wait (its share is {budgets.rate:g} a second, "
            f"bursts of {budgets.burst:g}); retry after the Retry-After seconds",
            retry_after_s=wait_s,
        )


def take_decoding(budgets: ClientBudgets, client: str, metrics: Metrics) -> None:
    """Let ``client`` start decoding unless it is in debt and the bucket binds now (``RateLimited`` with the wait
    until it is repaid); a client in debt that may borrow has its debt forgiven."""
    wait_s = budgets.wait_s(client)
    if wait_s == 0:
        return
    if not budgets.binds(client):
        budgets.forgive(client)
        return
    metrics.rejections.labels("client_decode_cpu").inc()
    raise RateLimited(
        f"this client's images took more decoding time than its share ({budgets.rate:g} CPU seconds a second) "
        "while others wait; retry after the Retry-After seconds, or send smaller images",
        retry_after_s=wait_s,
    )
