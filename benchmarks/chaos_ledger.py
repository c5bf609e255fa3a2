"""The chaos test's record: the driver's changes and their outcomes, the versions it pinned and when, the events
in order, and every violation with the events that led to it.

The driver, the load and the checker share one ``Ledger`` on one event loop: no locks. Times are
``time.monotonic()`` values; what the report shows is seconds since the chaos began.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RECENT_EVENTS = 15  # the events before a violation, kept as its context


@dataclass
class Violation:
    invariant: str  # "1 request", "2 alias", "3 deleted while loaded", "4 convergence", "5 pin", "0 error"
    at_s: float  # seconds since the chaos began
    what: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pin:
    """An explicit load of ``version`` on a replica: held from ``since`` (when its 200 arrived) until ``until``
    (when its unload was sent, or its replica was stopped)."""

    replica: int
    version: int
    since: float
    until: float | None = None

    def held_throughout(self, start: float, end: float) -> bool:
        return self.since <= start and (self.until is None or self.until > end)


class Ledger:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []  # (time.monotonic(), what)
        self.changes: Counter[tuple[str, str]] = Counter()  # (kind/via, outcome) → count
        self.violations: list[Violation] = []
        self.pins: list[Pin] = []
        self.load_times_s: list[float] = []  # explicit loads of a version the replica did not hold

    def at_s(self, t: float | None = None) -> float:
        """Seconds since the chaos began, of ``t`` (default: now)."""
        return round((time.monotonic() if t is None else t) - self.t0, 2)

    def begin(self) -> None:
        """The chaos begins now: times are counted from here (events before it have negative times)."""
        self.t0 = time.monotonic()

    def event(self, text: str) -> None:
        self.events.append((time.monotonic(), text))

    def timeline(self, last: int | None = None) -> list[str]:
        """The events (the ``last`` ones), each as ``seconds since the chaos began  what``."""
        return [f"{self.at_s(at):8.2f} s  {text}" for at, text in self.events[-(last or len(self.events)) :]]

    def change(self, kind: str, outcome: str, detail: str = "") -> None:
        """Count one change the driver applied (or tried) and log it."""
        self.changes[(kind, outcome)] += 1
        self.event(f"{kind}: {outcome}" + (f" ({detail})" if detail else ""))

    def violate(self, invariant: str, what: str, **context: Any) -> None:
        recent = self.timeline(RECENT_EVENTS)
        self.violations.append(Violation(invariant, self.at_s(), what, {**context, "recent_events": recent}))
        self.event(f"VIOLATION {invariant}: {what}")

    # ----- pins --------------------------------------------------------------------------------------------

    def pin(self, replica: int, version: int, since: float) -> None:
        self.pins.append(Pin(replica, version, since))

    def unpin(self, replica: int, version: int, at: float) -> None:
        for pin in self.active_pins(replica):
            if pin.version == version:
                pin.until = at

    def drop_pins(self, replica: int, at: float) -> list[int]:
        """The replica stops: its pins end with it (a restarted process starts with none)."""
        dropped = self.active_pins(replica)
        for pin in dropped:
            pin.until = at
        return [pin.version for pin in dropped]

    def active_pins(self, replica: int) -> list[Pin]:
        return [pin for pin in self.pins if pin.replica == replica and pin.until is None]

    def held_throughout(self, replica: int, version: int, start: float, end: float) -> bool:
        """Whether an explicit load kept ``version`` pinned on ``replica`` from ``start`` to ``end``."""
        return any(p.held_throughout(start, end) for p in self.pins if (p.replica, p.version) == (replica, version))
