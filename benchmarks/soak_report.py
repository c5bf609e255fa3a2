"""The soak's tallies and report: outcomes by door and kind, good latencies per door against the unloaded run,
the slowest good answers broken down by the server's own timings, and RSS growth after warm-up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitserve.benchmarks.soak_doors import DOORS, OK, Stages, is_failure

GOOD = "good"  # the good clients' kind


@dataclass
class Tally:
    """Responses by (door, client kind, outcome); the good clients' latencies by door."""

    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    good_ms: dict[str, list[float]] = field(default_factory=dict)
    # Per good /classify answer: (client ms, then the server's own total, decode, queue, infer ms), to say where
    # the slow ones waited (the other doors do not report the server's timings).
    good_stages: list[tuple[float, ...]] = field(default_factory=list)

    def count(self, door: str, kind: str, outcome: str) -> None:
        self.outcomes[(door, kind, outcome)] += 1

    def good(self, door: str, outcome: str, ms: float, stages: Stages | None) -> None:
        """One good client's answer: counted, and its latency kept when it succeeded."""
        self.count(door, GOOD, outcome)
        if outcome in OK:
            self.good_ms.setdefault(door, []).append(ms)
            if stages is not None:
                self.good_stages.append((ms, *stages))

    def all_good_ms(self) -> list[float]:
        return [ms for door in self.good_ms.values() for ms in door]

    def merge(self, other: Tally) -> None:
        self.outcomes.update(other.outcomes)
        for door, values in other.good_ms.items():
            self.good_ms.setdefault(door, []).extend(values)
        self.good_stages += other.good_stages


def summarize(
    minutes: float,
    baseline: Tally,
    soak: Tally,
    rss: list[tuple[float, float]],
    soak_started: float,
    ready: int,
    *,
    good_rate: float | None = None,
    rejections: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``rss``: (seconds since start, MiB) samples. Warm-up is the soak's first fifth (at least a minute). RSS
    swings between a floor and a ceiling as the biggest images' decodes come and go; a leak lifts both. Growth is
    the larger rise, floor or ceiling (each a minute's minimum or maximum), from the first minute after warm-up
    to the last; the swing (the highest sample over the first minute's floor) is reported beside it. ``rejections``:
    the server's own count of refused images by reason, over the whole run."""
    outcomes: dict[str, dict[str, dict[str, int]]] = {}
    for (door, kind, outcome), n in sorted(soak.outcomes.items()):
        outcomes.setdefault(door, {}).setdefault(kind, {})[outcome] = n
    failures = dict.fromkeys(outcomes, 0)
    for (door, _, outcome), n in soak.outcomes.items():
        failures[door] += n if is_failure(outcome) else 0
    good_failures = {
        f"{door} {outcome}": n
        for (door, kind, outcome), n in soak.outcomes.items()
        if kind == GOOD and outcome not in OK
    }
    return {
        "minutes": minutes,
        "good_rate_per_s": None if good_rate is None else round(good_rate, 1),
        **rss_summary(rss, soak_started, minutes),
        "responses": outcomes,
        "total_5xx": sum(failures.values()),
        "failures_by_door": dict(sorted(failures.items())),
        "good_failures": good_failures,
        "good_unloaded": latency(baseline.all_good_ms()),
        "good_loaded": {**latency(soak.all_good_ms()), "slowest_1pct": slowest(soak)},
        "good_by_door": {
            door: {"unloaded": latency(baseline.good_ms.get(door, [])), "loaded": latency(soak.good_ms.get(door, []))}
            for door in DOORS
        },
        "server_rejections": rejections or {},
        "ready_at_end": ready == 200,
    }


def rss_summary(rss: list[tuple[float, float]], soak_started: float, minutes: float) -> dict[str, Any]:
    warm_end = soak_started + max(60.0, minutes * 60 / 5)
    after = [(t, mib) for t, mib in rss if t >= warm_end]
    first = last = (float("nan"), float("nan"))
    growth: float | None = None
    swing: float | None = None
    if len(after) > 2:
        head = [mib for t, mib in after if t < after[0][0] + 60]
        tail = [mib for t, mib in after if t > after[-1][0] - 60]
        first, last = (min(head), max(head)), (min(tail), max(tail))
        growth = round(max((last[0] - first[0]) / first[0], (last[1] - first[1]) / first[1]) * 100, 1)
        swing = round((max(mib for _, mib in after) - first[0]) / first[0] * 100, 1)
    return {
        "rss_mib": rss,
        "rss_after_warmup_mib": first,  # (floor, ceiling) of the first minute after warm-up
        "rss_last_minute_mib": last,
        "rss_growth_after_warmup_pct": growth,
        "rss_swing_pct": swing,
    }


def latency(values: list[float]) -> dict[str, Any]:
    def pct(q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {"requests": len(values), "p50_ms": pct(50), "p99_ms": pct(99)}


def slowest(tally: Tally) -> dict[str, float] | None:
    """Medians over the slowest 1 % of good ``/classify`` answers (by client latency): the client's ms and the
    server's own total, decode, queue and infer ms; the difference between client and server total is outside
    the app (connection, HTTP parsing, the client's own scheduling)."""
    if len(tally.good_stages) < 100:
        return None
    rows = np.array(sorted(tally.good_stages)[-len(tally.good_stages) // 100 :])
    names = ("client_ms", "server_total_ms", "decode_ms", "queue_ms", "infer_ms")
    return {name: round(float(v), 1) for name, v in zip(names, np.median(rows, axis=0), strict=True)}


def _span(floor_ceiling: tuple[float, float]) -> str:
    return f"{floor_ceiling[0]:g}–{floor_ceiling[1]:g}"


def _ratio(loaded: float | None, unloaded: float | None) -> str:
    return f"{loaded / unloaded:.2f}×" if loaded and unloaded else "–"


def render(payload: dict[str, Any], good_clients: int | None = None) -> str:
    lines = [f"# Soak: {payload['minutes']:g} min", ""]
    if payload.get("good_rate_per_s") is not None:
        clients = f"{good_clients} (a third per door), " if good_clients else ""
        lines += [f"Good clients: {clients}{payload['good_rate_per_s']} requests/s in all.", ""]
    if payload.get("without"):
        lines += [f"Without: {', '.join(payload['without'])}.", ""]
    lines += ["| good clients | requests | p50 ms | p99 ms | p99 ratio |", "|---|---|---|---|---|"]
    rows = [("all doors", payload["good_unloaded"], payload["good_loaded"])]
    rows += [(door, d["unloaded"], d["loaded"]) for door, d in payload.get("good_by_door", {}).items()]
    for name, base, loaded in rows:
        lines += [f"| {name}, unloaded | {base['requests']} | {base['p50_ms']} | {base['p99_ms']} | |"]
        ratio = _ratio(loaded["p99_ms"], base["p99_ms"])
        cells = f"{loaded['requests']} | {loaded['p50_ms']} | {loaded['p99_ms']} | {ratio}"
        lines += [f"| {name}, beside hostile + slow | {cells} |"]
    lines += [""]
    if payload["good_loaded"].get("slowest_1pct"):
        lines += [
            "Slowest 1 % of good /classify answers beside hostile + slow (medians, ms): "
            + ", ".join(f"{k.removesuffix('_ms')} {v:g}" for k, v in payload["good_loaded"]["slowest_1pct"].items()),
            "",
        ]
    by_door = ", ".join(f"{door} {n}" for door, n in payload.get("failures_by_door", {}).items())
    lines += [
        f"RSS floor–ceiling (MiB) in the first minute after warm-up {_span(payload['rss_after_warmup_mib'])}, in "
        f"the last minute {_span(payload['rss_last_minute_mib'])}: growth after warm-up "
        f"{payload['rss_growth_after_warmup_pct']} % (swing {payload['rss_swing_pct']} % over the floor); "
        f"5xx (gRPC: INTERNAL, UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED): {payload['total_5xx']} ({by_door}); "
        f"good clients' failures: {sum(payload.get('good_failures', {}).values())} "
        f"{payload.get('good_failures') or ''}; ready at the end: {payload['ready_at_end']}",
        "",
        "Refused by the server (images, by reason): "
        + (", ".join(f"{k} {v}" for k, v in sorted(payload.get("server_rejections", {}).items())) or "none"),
        "",
        "| door | client kind | outcomes |",
        "|---|---|---|",
    ]
    for door, kinds in payload["responses"].items():
        lines += [
            f"| {door} | {kind} | {', '.join(f'{o}: {n}' for o, n in sorted(counts.items()))} |"
            for kind, counts in kinds.items()
        ]
    lines += ["", "RSS (s, MiB): " + ", ".join(f"{t:g}: {m:g}" for t, m in payload["rss_mib"])]
    return "\n".join(lines) + "\n"
