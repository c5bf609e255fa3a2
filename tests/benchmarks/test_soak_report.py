"""The soak benchmark's summary: RSS growth after warm-up, 5xx counts and percentiles from its tallies."""

from __future__ import annotations

from vitserve.benchmarks.soak import Tally, render, summarize


def test_summary_counts_5xx_and_growth_after_warmup() -> None:
    baseline, soak = Tally(), Tally()
    baseline.good_ms += [10.0] * 99 + [20.0]
    soak.good_ms += [12.0] * 99 + [30.0]
    soak.count("good", "200")
    soak.count("good", "503")
    soak.count("json_deep", "413")
    soak.count("slow_headers", "closed")
    rss = [(0.0, 100.0), (10.0, 200.0), (20.0, 400.0), (30.0, 400.0), (40.0, 410.0), (50.0, 420.0), (60.0, 420.0)]
    payload = summarize(1, baseline, soak, rss, baseline_s=10, ready=200)
    assert payload["total_5xx"] == 1 and payload["good_5xx"] == 1
    assert payload["rss_after_warmup_mib"] == 400.0 and payload["rss_growth_after_warmup_pct"] == 5.0
    assert payload["good_unloaded"]["p50_ms"] == 10.0 and payload["good_loaded"]["p99_ms"] > 12.0
    assert payload["responses"]["json_deep"] == {"413": 1}
    text = render(payload)
    assert "growth after warm-up 5.0 %" in text and "| json_deep | 413: 1 |" in text
