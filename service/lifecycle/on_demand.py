"""The requests' side of loading on demand: finding a version without a store call per request, and one load per
cold version shared by every request waiting for it.

The registry (``service.lifecycle.versions``) owns the versions, decides what is loaded and evicted, and routes;
``DemandLoads`` keeps only what requests need on the way: the versions bare names resolved to, the cards of the
versions loaded on demand, the store calls and loads in progress.

- A bare name loaded on demand keeps its resolution (``named``): later requests for it make no store call, even
  after its version was evicted. Once ``store_poll_interval_s`` has passed it is re-resolved in the background, so a
  new production version is loaded on demand by a later request while the old one ages out of the LRU order.
- Requests' store calls (``resolve``) are shared by equal references in flight, and at most ``STORE_TURNS`` run at
  once: a burst of requests for many cold models queues here (each at most ``store_timeout_s``) instead of taking
  every store thread, which the follower and the admin routes need too (``service.lifecycle.store_calls`` refuses
  a call at once when all its threads are busy, as it must when they hang).
- Concurrent requests for a cold version wait on one load (``wait``), each at most until its deadline (then 503
  ``model_loading``; the load goes on), and the access log notes how long each waited (stage ``load_wait``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TypeVar

from vitserve.model_store import Card, ModelStore
from vitserve.service.core.errors import ModelNotLoaded
from vitserve.service.core.metrics import Metrics
from vitserve.service.lifecycle.loaded import LoadedVersion
from vitserve.service.lifecycle.residency import ModelLoading, Residency
from vitserve.service.lifecycle.store_calls import StoreCalls, StoreUnreachable
from vitserve.service.observability import request_context
from vitserve.service.observability.tracing import note_stage
from vitserve.service.settings import Settings

log = logging.getLogger(__name__)

STORE_TURNS = 2  # requests' store calls at once, of StoreCalls' four threads
T = TypeVar("T")


class DemandLoads:
    """What requests need to load versions on demand (see the module docstring). Event-loop side only."""

    def __init__(
        self,
        store: ModelStore,
        store_calls: StoreCalls,
        settings: Settings,
        residency: Residency,
        metrics: Metrics,
        loaded: Mapping[str, LoadedVersion],
        load: Callable[[Card], Coroutine[object, object, LoadedVersion]],
    ) -> None:
        self.store, self.store_calls, self.settings = store, store_calls, settings
        self.residency, self.metrics = residency, metrics
        self._loaded = loaded  # the registry's read-only view
        self._load = load  # the registry's load on demand
        self._names: dict[str, tuple[str, float]] = {}  # bare name → ("name:V" it resolved to, when)
        self._cards: dict[str, Card] = {}  # "name:V" loaded on demand → its card (a version's card never changes)
        self._pending: dict[str, asyncio.Task[LoadedVersion]] = {}  # loads in progress, shared by their waiters
        self._resolving: dict[str, asyncio.Task[Card]] = {}  # store calls in progress, shared by equal references
        self._store_turns = asyncio.Semaphore(STORE_TURNS)
        self._tasks: set[asyncio.Task[None]] = set()  # background re-resolutions

    def loading(self, ref: str) -> bool:
        """Whether a load of ``ref`` was asked for by requests and has not finished (it may wait for its turn)."""
        return ref in self._pending

    def card(self, ref: str) -> Card | None:
        return self._cards.get(ref)

    def remember(self, card: Card, name: str | None) -> None:
        """``card``'s version was loaded on demand: its card kept, and the bare ``name`` that resolved to it."""
        self._cards[card.ref] = card
        if name is not None:
            self._names[name] = (card.ref, time.monotonic())

    def named(self, name: str) -> Card | None:
        """The card of the version a bare ``name`` loaded on demand resolved to (loaded, or evicted since)."""
        entry = self._names.get(name)
        if entry is None:
            return None
        ref, resolved_at = entry
        interval = self.settings.store_poll_interval_s
        if interval and time.monotonic() - resolved_at > interval:
            self._names[name] = (ref, time.monotonic())  # one re-resolution per interval, whatever its outcome
            task = asyncio.create_task(self._re_resolve(name, ref), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._cards[ref]

    async def _re_resolve(self, name: str, ref: str) -> None:
        try:
            card = await self.resolve(name)
        except Exception as err:  # a store that does not answer: keep serving what is loaded
            log.debug("re-resolving %s failed: %s", name, err)
            return
        if card.ref != ref and self._names.get(name, ("",))[0] == ref:
            del self._names[name]
            log.info("%s now resolves to %s (was %s): the next request loads it on demand", name, card.ref, ref)

    async def resolve(self, ref: str) -> Card:
        """The store's card for a request's ``ref`` (``ModelNotFound`` when unknown), shared and bounded as the
        module docstring says."""
        pending = self._resolving.get(ref)
        if pending is None:
            pending = asyncio.create_task(self._resolve_now(ref), context=contextvars.Context())
            self._resolving[ref] = pending
            pending.add_done_callback(functools.partial(_forget, self._resolving, ref))
        return await asyncio.shield(pending)

    async def _resolve_now(self, ref: str) -> Card:
        try:
            await asyncio.wait_for(self._store_turns.acquire(), self.settings.store_timeout_s)
        except TimeoutError:
            raise StoreUnreachable("the model store is slow to answer; retry later", retry_after_s=5) from None
        try:
            return await self.store_calls.run(self.store.resolve, ref)
        finally:
            self._store_turns.release()

    async def wait(self, asked: str, card: Card, deadline: float | None) -> LoadedVersion:
        """``card``'s version, loaded on demand for a request for ``asked``, which waits until ``deadline``
        (monotonic; default: the server's request timeout from now). ``ModelNotLoaded`` when its model may not be
        loaded on demand."""
        if not self.settings.loads_on_demand(card.name):
            raise ModelNotLoaded(
                f"{asked} ({card.ref}) exists in the store but is not loaded here; "
                f"an admin can load it with POST /admin/models/{card.ref}/load"
            )
        started = time.monotonic()
        deadline = deadline if deadline is not None else started + self.settings.request_timeout_s
        while True:
            task = self._pending.get(card.ref)
            if task is None:
                # A context of its own: the load belongs to no one request (its logs, its trace).
                task = asyncio.create_task(self._load(card), context=contextvars.Context())
                self._pending[card.ref] = task
                task.add_done_callback(functools.partial(_forget, self._pending, card.ref))
            try:
                version = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                expected = self.residency.use(card.ref).cold_start_s or self.settings.request_timeout_s
                raise ModelLoading(
                    f"{card.ref} is being loaded on demand and was not ready within the request's deadline; "
                    "retry after the Retry-After seconds",
                    retry_after_s=max(1.0, expected - (time.monotonic() - started)),
                ) from None
            if self._loaded.get(card.ref) is version:
                break  # else evicted between its load and this turn of ours (rare): load it again
        self.residency.touch(card.ref, hit=False)
        waited_ms = (time.monotonic() - started) * 1e3
        note_stage(request_context.current(), "load_wait", waited_ms)  # the access log says the request waited
        self.metrics.stage_seconds.labels("load_wait").observe(waited_ms / 1e3)
        return version

    def close(self) -> None:
        for task in [*self._pending.values(), *self._resolving.values(), *self._tasks]:
            task.cancel()


def _forget(tasks: dict[str, asyncio.Task[T]], ref: str, task: asyncio.Task[T]) -> None:
    """Done: no longer shared; its exception retrieved (every request waiting for it may have gone)."""
    if tasks.get(ref) is task:
        del tasks[ref]
    if not task.cancelled():
        task.exception()
