"""Store work on threads of its own, each call under a deadline.

The store is a shared filesystem (NFS, CephFS, EFS) and such mounts hang: a call into a hung mount does not
fail, it never returns, and the thread that made it is lost until the mount answers again. Were store calls made
on the event loop's default executor, every hung call would take one of its workers until none was left, and
then everything else that executor runs (``getaddrinfo`` for URL inputs, request bodies joined off the loop, the
lifespan's shutdown) would queue behind them for ever.

So store calls run on threads of their own, at most ``max_workers`` at once, nothing else runs on them, and a
caller waits at most ``timeout_s`` for its answer. A thread that is stuck stays stuck, but it is counted: when
``max_workers`` are stuck, a new call fails at once instead of queueing. They are daemon threads started per call
(tens of microseconds; store calls are not on the serving path): a ``ThreadPoolExecutor``'s workers are joined
when the interpreter exits, so one stuck in a hung mount would keep a drained replica from exiting.

A call that times out marks the store unreachable (``unreachable_since``, shown in ``/models`` and ``/readyz``)
until a call succeeds again. Serving never waits on the store: a replica keeps answering with what it has loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vitserve.service.core.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreUnreachable(Unavailable):
    """A store call did not answer within its deadline, or every store thread is stuck in one that did not."""

    code = "store_unreachable"


class StoreCalls:
    """``await calls.run(fn, *args)``: ``fn(*args)`` on a store thread, at most ``timeout_s`` seconds."""

    def __init__(self, *, max_workers: int = 4, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._max = max_workers
        self._busy = 0  # threads inside a call, stuck ones included
        self._count_lock = threading.Lock()
        self.unreachable_since: float | None = None  # time.time() of the first call that timed out
        self.last_error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.unreachable_since is None

    def status(self) -> dict[str, Any]:
        """What ``/models`` and ``/readyz`` say of the store."""
        if self.unreachable_since is None:
            return {"reachable": True}
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.unreachable_since))
        return {"reachable": False, "unreachable_since": since, "detail": f"store: unreachable since {since}"}

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """``fn(*args)``'s result or exception; ``StoreUnreachable`` (503) when it does not answer in time."""
        limit_s = timeout_s or self.timeout_s
        with self._count_lock:
            if self._busy >= self._max:
                raise self._unreachable("every store thread waits on a store call that has not answered")
            self._busy += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        threading.Thread(target=self._call, args=(loop, future, fn, args), name="store", daemon=True).start()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # call answers, and a follower cancelled at shutdown then polls on for ever.
            async with asyncio.timeout(limit_s):
                result = await asyncio.shield(future)
        except TimeoutError:
            future.add_done_callback(_consume)  # it may answer some day; nobody waits for it then
            raise self._unreachable(f"a store call did not answer within {limit_s:g} s") from None
        if self.unreachable_since is not None:
            log.warning("store: reachable again")
            self.unreachable_since, self.last_error = None, None
        return result

    def _call(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], fn: Callable[..., T], args: tuple[Any, ...]
    ) -> None:
        outcome: Callable[[], None]
        try:
            result = fn(*args)
            outcome = lambda: future.set_result(result)  # noqa: E731
        except BaseException as err:  # handed to the caller, as run_in_executor would
            failure = err
            outcome = lambda: future.set_exception(failure)  # noqa: E731
        finally:
            with self._count_lock:
                self._busy -= 1

        def settle() -> None:
            if not future.done():  # the caller may have been cancelled meanwhile
                outcome()

        with contextlib.suppress(RuntimeError):  # the loop closed while the store hung: nobody left to tell
            loop.call_soon_threadsafe(settle)

    def _unreachable(self, why: str) -> StoreUnreachable:
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            log.error("store: unreachable (%s); serving what is loaded", why)
        self.last_error = why
        return StoreUnreachable(f"the model store does not answer ({why}); retry later", retry_after_s=5)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" warning for a late failure
