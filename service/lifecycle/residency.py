"""A replica's memory budget, what each loaded version costs of it, and which version makes room: the bookkeeping
behind loading on demand. The registry (``service.lifecycle.versions``) owns the versions and acts; this module
measures, remembers and chooses, and does nothing asynchronous.

What a version costs is measured, not guessed: the process's resident memory (``/proc/self/statm``) before and
after its build and warm-up, taken while the registry's load lock is held so that no two loads overlap. Memory
that an unload gave back while the load ran is added back (``Mark``), so a concurrent unload does not make the new
version look cheap. The measurement is never taken below the weights' own bytes at the precision the engine runs
(a lower bound: an allocator reusing freed pages can hide a delta, never the weights). It is kept per version and
precision, and survives the unload: the next load of that version knows its cost before it starts.

Before a version's first load its cost can only be estimated, to decide what to evict first: the largest cost
measured for the same architecture at the same precision (never the process's first load, see below), else 16 MiB
and four times its fp32 weights (weights, the compiled graph's copy of them, buffers). After the load the
measurement replaces the estimate, and if the sum is then over the budget more versions are evicted (or the new
one, loaded on demand, goes again: ``NoRoom``).

The first version a process loads also pays for its engine libraries' one-off set-up (the tiny benchmark model
measured 135 MiB with OpenVINO, where a later one measured 19 MiB): that is charged to the start-up model, which is
served and never evicted, kept out of the estimates for other versions, and it keeps the sum conservative. The
default budget is the memory limit (the container's cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``;
without one, the machine's memory) minus the process's size when the registry starts and ``memory_headroom_bytes``
(request bodies, decoding, batches: bounded elsewhere by ``MAX_BODIES_BYTES`` and the admission budget). After an
unload, glibc is asked to return freed heap pages to the system (``malloc_trim``), so that the process's resident
size follows what is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vitserve.model_store import Card
from vitserve.service.core.errors import Unavailable
from vitserve.service.core.metrics import Metrics
from vitserve.vit.config import ViTConfig

log = logging.getLogger(__name__)

MIB = 1024**2
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63
_BYTES_PER_PARAM = {"int8": 1, "int8-static": 1, "bf16": 2}  # else fp32: 4
# Before anything was measured: a fixed part plus a multiple of the fp32 weights (weights, the compiled graph's copy,
# buffers). Fitted to the OpenVINO engine's measured costs (benchmarks/README.md, "Many models on one replica"):
# the tiny benchmark model 19 MiB, ViT-S/16 450 MiB, ViT-B/16 1233 MiB, for 0.6, 88 and 346 MB of weights.
_FIRST_GUESS_FIXED = 16 * 1024**2
_FIRST_GUESS_FACTOR = 4

Residence = Literal["resident", "loading", "draining", "cold"]


class NoRoom(Unavailable):
    """A version loaded on demand does not fit in the memory budget even with every evictable version gone: what
    is left is held by versions that are never evicted (served, canary, held, pinned)."""

    code = "insufficient_memory"


class ModelLoading(Unavailable):
    """The request's deadline came while the version it asked for was still loading on demand; the load goes on,
    and a retry after Retry-After finds it loaded."""

    code = "model_loading"


def process_rss() -> int:
    """This process's resident memory in bytes (``/proc/self/statm``); 0 where the file does not exist."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_limit(root: Path = Path("/sys/fs/cgroup"), cgroup_file: Path = Path("/proc/self/cgroup")) -> int | None:
    """The memory this process may use: its cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, in
    its own cgroup or at the root of the container's view), else the machine's memory; ``None`` if unknowable."""
    own: dict[str, str] = {}  # "v2" / "v1" → the process's cgroup path
    try:
        for line in cgroup_file.read_text().splitlines():
            number, controllers, where = line.split(":", 2)
            if number == "0" and not controllers:
                own["v2"] = where.lstrip("/")
            elif "memory" in controllers.split(","):
                own["v1"] = where.lstrip("/")
    except (OSError, ValueError):
        pass
    candidates = [root / own.get("v2", "") / "memory.max", root / "memory.max"]
    candidates += [root / "memory" / own.get("v1", "") / "memory.limit_in_bytes", root / "memory/memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def default_budget(headroom_bytes: int, *, limit: int | None = None, rss: int | None = None) -> int:
    """The memory limit minus the process's size now and ``headroom_bytes`` (at least 0)."""
    limit = memory_limit() if limit is None else limit
    if limit is None:
        log.warning("memory limit unknown: no memory budget for loading on demand (set VITSERVE_MEMORY_BUDGET)")
        return 0
    return max(0, limit - (process_rss() if rss is None else rss) - headroom_bytes)


_libc: ctypes.CDLL | Literal[False] | None = None


def give_back_memory() -> None:
    """Ask glibc to return the heap's free pages to the system (``malloc_trim(0)``); nothing elsewhere."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def param_count(config: ViTConfig) -> int:
    """Parameters of a ``VisionTransformer(config)`` (patch embedding, tokens, blocks, norm, head): the weights'
    size without building the model."""
    d, hidden = config.embed_dim, config.mlp_hidden_dim
    patch = config.in_chans * config.patch_size**2 * d + d
    tokens = (config.num_patches + 2) * d  # position embedding (patches + class token) and the class token
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    head = 2 * d + d * config.num_classes + config.num_classes
    return patch + tokens + config.depth * block + head


def expected_precision(card: Card, engine_precision: str) -> str:
    """The precision ``card``'s version will run at under the setting ``engine_precision`` (auto → its opt-in)."""
    return card.serving.get("precision", "fp32") if engine_precision == "auto" else engine_precision


def weights_bytes(config: ViTConfig, precision: str) -> int:
    return param_count(config) * _BYTES_PER_PARAM.get(precision, 4)


@dataclass
class VersionUse:
    """One version's figures on this replica; kept after it unloads, so its next load knows its cost."""

    cost_bytes: int | None = None  # measured at its last load (at ``precision``)
    precision: str = ""
    cold_start_s: float | None = None  # build + warm-up, at its last load
    loads: int = 0
    evictions: int = 0
    hits: int = 0  # requests routed to it while it was resident
    misses: int = 0  # requests that waited for it to load
    last_used: float | None = None  # time.time() of the last request routed to it
    last_used_mono: float = 0.0  # the same on the monotonic clock: the LRU order

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass(frozen=True)
class Mark:
    """The state a measurement starts from (``Residency.mark``)."""

    rss: int
    released: int
    started: float


class Residency:
    """The budget, each held version's measured cost, and every version's use (see the module docstring). Used
    from the event loop only."""

    def __init__(
        self, budget_bytes: int, *, metrics: Metrics | None = None, read_rss: Callable[[], int] = process_rss
    ) -> None:
        self.budget = budget_bytes
        self.metrics = metrics
        self.read_rss = read_rss  # tests replace it (a fake engine's memory)
        self.uses: dict[str, VersionUse] = {}  # "name:V" → its figures
        self.costs: dict[str, int] = {}  # "name:V" → bytes, for each version held now (loaded or draining)
        self._architectures: dict[tuple[str, str], int] = {}  # (config, precision) → largest cost measured
        self._released = 0  # bytes of the versions unloaded so far (see ``Mark``)
        self._set_up = False  # whether a first version was loaded (its cost includes the libraries' set-up)
        if metrics is not None:
            metrics.memory_budget.set(budget_bytes)

    @property
    def used(self) -> int:
        """Bytes the held versions take together, as measured."""
        return sum(self.costs.values())

    def use(self, ref: str) -> VersionUse:
        return self.uses.setdefault(ref, VersionUse())

    def touch(self, ref: str, *, hit: bool = True) -> None:
        """A request was routed to ``ref``: it becomes the most recently used, and counts as a hit (resident) or
        a miss (it waited for the load)."""
        use = self.use(ref)
        use.last_used, use.last_used_mono = time.time(), time.monotonic()
        if hit:
            use.hits += 1
        else:
            use.misses += 1
        if self.metrics is not None:
            self.metrics.residency.labels(*ref.split(":"), "hit" if hit else "miss").inc()

    def estimate(self, card: Card, precision: str) -> int:
        """What ``card``'s version will take: its last measured cost at ``precision``, else the largest measured
        for its architecture, else a first guess (see the module docstring)."""
        use = self.uses.get(card.ref)
        if use is not None and use.cost_bytes is not None and use.precision == precision:
            return use.cost_bytes
        known = self._architectures.get((_architecture(card.config), precision))
        return (
            known
            if known is not None
            else _FIRST_GUESS_FIXED + _FIRST_GUESS_FACTOR * weights_bytes(card.config, "fp32")
        )

    def victims(self, need: int, evictable: Iterable[str]) -> tuple[list[str], bool]:
        """The least recently used of ``evictable`` whose eviction leaves room for ``need`` more bytes, in
        eviction order, and whether that is enough; when it is not, every one of them, and ``False``."""
        free = self.budget - self.used
        chosen: list[str] = []
        for ref in sorted(evictable, key=lambda r: self.use(r).last_used_mono):
            if free >= need:
                break
            chosen.append(ref)
            free += self.costs.get(ref, 0)
        return chosen, free >= need

    def mark(self) -> Mark:
        return Mark(self.read_rss(), self._released, time.monotonic())

    def loaded(self, card: Card, mark: Mark, precision: str, *, cause: str) -> int:
        """``card``'s version is built and warmed: its cost measured since ``mark``, and its cold start. Returns
        the cost."""
        delta = self.read_rss() - mark.rss + (self._released - mark.released)
        cost = max(delta, weights_bytes(card.config, precision))
        use = self.use(card.ref)
        use.cost_bytes, use.precision = cost, precision
        use.cold_start_s = time.monotonic() - mark.started
        use.loads += 1
        use.last_used_mono, use.last_used = time.monotonic(), time.time()  # loaded for a reason: not the LRU yet
        if self._set_up:  # the first load also paid for the engine libraries: no estimate for anything else
            key = (_architecture(card.config), precision)
            self._architectures[key] = max(cost, self._architectures.get(key, 0))
        self._set_up = True
        self.costs[card.ref] = cost
        log.info(
            "%s: %.1f MiB resident (%s), cold start %.2f s; %.0f of %.0f MiB of the budget used",
            card.ref,
            cost / MIB,
            precision,
            use.cold_start_s,
            self.used / MIB,
            self.budget / MIB,
        )
        if self.metrics is not None:
            name, version = card.ref.split(":")
            self.metrics.model_loads.labels(name, version, cause).inc()
            self.metrics.cold_start_seconds.labels(name).observe(use.cold_start_s)
            self.metrics.model_memory.labels(name, version).set(cost)
            self.metrics.memory_used.set(self.used)
        return cost

    def evicted(self, ref: str) -> None:
        self.use(ref).evictions += 1
        if self.metrics is not None:
            self.metrics.model_evictions.labels(*ref.split(":")).inc()

    def unloaded(self, ref: str) -> None:
        """``ref`` is gone from memory: its cost leaves the sum (and counts as given back, see ``Mark``)."""
        cost = self.costs.pop(ref, 0)
        self._released += cost
        if self.metrics is not None:
            self.metrics.memory_used.set(self.used)
            with contextlib.suppress(KeyError):  # never set: its build failed
                self.metrics.model_memory.remove(*ref.split(":"))


def _architecture(config: ViTConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)
