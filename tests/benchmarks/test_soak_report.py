"""The soak benchmark's summary: RSS growth after warm-up, 5xx counts and percentiles from its tallies."""

from __future__ import annotations

from vitserve.benchmarks.soak import Tally, render, summarize


def test_summary_counts_5xx_and_growth_after_warmup() -> None:
    baseline, soak = Tally(), Tally()
    baseline.good_ms += [10.0] * 99 + [20.0]
    soak.good_ms += [12.0] * 99 + [30.0]
    soak.good_stages += [(10.0, 2.0, 1.0, 5.0)] * 99 + [(28.0, 2.0, 20.0, 5.0)]
    soak.count("good", "200")
    soak.count("good", "503")
    soak.count("json_deep", "413")
    soak.count("slow_headers", "closed")
    # 5 min soak from t=100: warm-up to t=160; first minute after it ~400 MiB with one spike, last minute ~420.
    rss = [(100.0 + 5 * i, 200.0 + 200 * min(1, i / 4)) for i in range(12)]
    rss += [(160.0 + 5 * i, 400.0) for i in range(12)]
    rss[14] = (rss[14][0], 500.0)  # an in-flight decode of a big image: a peak, not growth
    rss += [(220.0 + 5 * i, 410.0) for i in range(24)]
    rss += [(340.0 + 5 * i, 420.0) for i in range(13)]
    payload = summarize(5, baseline, soak, rss, soak_started=100.0, ready=200, good_rate=12.34)
    assert payload["total_5xx"] == 1 and payload["good_5xx"] == 1
    assert payload["rss_after_warmup_mib"] == (400.0, 500.0) and payload["rss_last_minute_mib"] == (420.0, 420.0)
    assert payload["rss_growth_after_warmup_pct"] == 5.0 and payload["rss_swing_pct"] == 25.0
    assert payload["good_unloaded"]["p50_ms"] == 10.0 and payload["good_loaded"]["p99_ms"] > 12.0
    assert payload["responses"]["json_deep"] == {"413": 1} and payload["good_rate_per_s"] == 12.3
    text = render(payload)
    assert "growth after warm-up 5.0 % (swing 25.0 % over the floor)" in text and "| json_deep | 413: 1 |" in text
    assert "first minute after warm-up 400–500, in the last minute 420–420" in text
    assert "12.3 requests/s" in text
    slow = payload["good_loaded"]["slowest_1pct"]
    assert slow == {"client_ms": 30.0, "server_total_ms": 28.0, "decode_ms": 2.0, "queue_ms": 20.0, "infer_ms": 5.0}
    assert "Slowest 1 % beside hostile + slow (medians, ms): client 30, server_total 28, decode 2, queue 20" in text


def test_summary_of_a_soak_too_short_to_judge() -> None:
    payload = summarize(0.5, Tally(), Tally(), [(0.0, 100.0), (30.0, 100.0)], soak_started=0.0, ready=503)
    assert payload["rss_growth_after_warmup_pct"] is None and not payload["ready_at_end"]
    assert "growth after warm-up None" in render(payload)
