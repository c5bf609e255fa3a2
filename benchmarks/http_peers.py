"""The HTTP benchmark's peers section: answer checks, /healthz under load, ratios and the Markdown table.

Each server row (ours per engine and precision, each peer server) holds, per concurrency, images/s and
p50/p95/p99 ms. Before a server is timed it classifies the reference JPEG and its answer is compared with our
fp32 server's: the same top-1 class, and the largest difference in softmax score over the classes both return
(a wrong server is reported, not timed). The reference is the JPEG on which our server's top-1 leads its
runner-up by the widest margin, so that a legitimate numerical difference (bf16, int8, another decode of the
JPEG) does not flip a near tie.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from vitserve.benchmarks import report
from vitserve.benchmarks.timing import percentile_ms
from vitserve.model_store.serving import REDUCED_PRECISIONS

HEALTHZ_INTERVAL_S = 0.05
HEALTHZ_LEVELS = (16, 64)  # the concurrency levels at which /healthz is polled, on our server
RATIO_CONCURRENCY = 16  # throughput ratios compare servers at this many clients
LATENCY_CONCURRENCY = 1  # p50 ratios compare servers at this many clients
REDUCED = REDUCED_PRECISIONS


def predictions_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-k list of a single-image answer: ours (``results[0].predictions``) or a peer's (``predictions``)."""
    found = body["results"][0]["predictions"] if "results" in body else body["predictions"]
    return list(found)


def classify(url: str, path: str, jpeg: bytes, top_k: int) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{url}{path}", files={"file": ("reference.jpg", jpeg, "image/jpeg")}, data={"top_k": str(top_k)}, timeout=300
    )
    response.raise_for_status()
    return predictions_of(response.json())


def reference_jpeg(url: str, path: str, jpegs: Sequence[bytes]) -> int:
    """The index of the JPEG whose top-1 class leads the runner-up by the widest score margin on ``url``."""
    margins = []
    for jpeg in jpegs:
        first, second = classify(url, path, jpeg, 2)[:2]
        margins.append(first["score"] - second["score"])
    return max(range(len(jpegs)), key=margins.__getitem__)


def compare(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Top-1 of both and the largest |Δscore| over the classes both answers list."""
    mine = {p["index"]: p["score"] for p in ours}
    other = {p["index"]: p["score"] for p in theirs}
    common = mine.keys() & other.keys()
    return {
        "top1_ours": ours[0]["index"],
        "top1": theirs[0]["index"],
        "same_top1": ours[0]["index"] == theirs[0]["index"],
        "max_abs_score_diff": max((abs(mine[i] - other[i]) for i in common), default=None),
        "classes_compared": len(common),
    }


class HealthzProbe:
    """Polls ``GET /healthz`` every 50 ms from a thread of its own while a level runs; records each latency."""

    def __init__(self, url: str, interval_s: float = HEALTHZ_INTERVAL_S, max_polls: int = 100_000) -> None:
        self.url = url
        self.interval_s = interval_s
        self.max_polls = max_polls
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="healthz-probe", daemon=True)

    def __enter__(self) -> HealthzProbe:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(self.max_polls):
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if ok:
                    self.latencies.append(elapsed)
                else:
                    self.failures += 1
                self._stop.wait(max(0.0, self.interval_s - elapsed))

    def stats(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"healthz_polls": len(self.latencies), "healthz_failures": self.failures}
        if self.latencies:
            fields["healthz_p50_ms"] = percentile_ms(self.latencies, 50)
            fields["healthz_p99_ms"] = percentile_ms(self.latencies, 99)
        return fields


def _level(row: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in row.get("levels", []) if lv["concurrency"] == concurrency), None)


def _best(
    rows: Sequence[dict[str, Any]], role: str, precisions: Sequence[str], concurrency: int, key: str, lowest: bool
) -> tuple[dict[str, Any], float] | None:
    found = [
        (row, float(level[key]))
        for row in rows
        if row["role"] == role and row["precision"] in precisions
        for level in [_level(row, concurrency)]
        if level is not None
    ]
    if not found:
        return None
    return (min if lowest else max)(found, key=lambda item: item[1])


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ours ÷ the best peer server: images/s at 16 clients (fp32; reduced precision), p50 at 1 client per
    precision. Each entry names the two rows it divides; absent where either side has no row."""
    result: dict[str, dict[str, Any]] = {}

    def add(name: str, ours: tuple[dict[str, Any], float] | None, peer: tuple[dict[str, Any], float] | None) -> None:
        if ours and peer:
            result[name] = {"value": ours[1] / peer[1], "ours": ours[0]["label"], "peer": peer[0]["label"]}

    c = RATIO_CONCURRENCY
    add(
        f"ours_fp32_vs_best_fp32_peer_images_per_s_at_{c}",
        _best(rows, "ours", ["fp32"], c, "images_per_s", lowest=False),
        _best(rows, "peer", ["fp32"], c, "images_per_s", lowest=False),
    )
    add(
        f"ours_reduced_vs_best_reduced_peer_images_per_s_at_{c}",
        _best(rows, "ours", REDUCED, c, "images_per_s", lowest=False),
        _best(rows, "peer", REDUCED, c, "images_per_s", lowest=False),
    )
    c = LATENCY_CONCURRENCY
    for precision in ("fp32", *REDUCED):
        add(
            f"ours_p50_vs_best_peer_p50_at_{c}_{precision}",
            _best(rows, "ours", [precision], c, "p50_ms", lowest=True),
            _best(rows, "peer", [precision], c, "p50_ms", lowest=True),
        )
    return result


def markdown(section: dict[str, Any], concurrency: Sequence[int]) -> str:
    """The peers table (a row per server, img/s and p50/p99 per concurrency, its answer check), ratios, notes."""
    headers = ["server", "role", "precision"]
    for c in concurrency:
        headers += [f"c{c} img/s", f"c{c} p50/p99 ms"]
    headers += ["top-1 = ours", "max |Δscore|"]
    rows = []
    for row in section["servers"]:
        cells: list[object] = [row["label"], row["role"], row["precision"]]
        if "levels" not in row:  # the reason in the first cell; an error's (multi-line) text below the table
            reason = f"skipped: {row['skipped']}" if "skipped" in row else "error (below)"
            rows.append([*cells, reason, *[None] * (len(headers) - 4)])
            continue
        for c in concurrency:
            level = _level(row, c)
            cells += (
                [level["images_per_s"], f"{level['p50_ms']:.1f} / {level['p99_ms']:.1f}"] if level else [None, None]
            )
        check = row.get("check") or {}
        same = check.get("same_top1")
        cells += [None if same is None else "yes" if same else "NO", check.get("max_abs_score_diff")]
        rows.append(cells)
    text = "\n## Peer servers\n\n" + report.markdown_table(headers, rows)
    text += (
        f"\nThreads: every server is held to {section['threads']} (ours: VITSERVE_ENGINE_THREADS; PyTorch: "
        "torch.set_num_threads; OpenVINO: INFERENCE_NUM_THREADS) and serves the same weights, preprocessing and "
        f"JPEGs; answers checked against ours on JPEG {section['reference_jpeg']} before timing.\n\n"
    )
    text += "\n".join(
        f"- {name}: {entry['value']:.3f} ({entry['ours']} ÷ {entry['peer']})"
        for name, entry in section["ratios"].items()
    )
    noop = section.get("litserve_noop_p50_ms_at_1")
    text += f"\n- LitServe alone (no-op model), p50 at 1 client: {noop:.1f} ms\n" if noop is not None else "\n"
    errors = [f"- {r['label']}: {r['error']}" for r in section["servers"] if "error" in r]
    return text + ("\nErrors:\n" + "\n".join(errors) + "\n" if errors else "")
