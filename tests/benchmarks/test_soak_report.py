"""The soak benchmark's summary: RSS growth after warm-up, failures by door and percentiles from its tallies;
and how its clients name what the server answered (HTTP/2 frames read by hand, gRPC codes)."""

from __future__ import annotations

from typing import Any

import grpc

from vitserve.benchmarks.soak import rejections
from vitserve.benchmarks.soak_doors import grpc_outcome, is_failure
from vitserve.benchmarks.soak_report import Tally, render, summarize
from vitserve.benchmarks.soak_slow import (
    ACK,
    DATA,
    END_STREAM,
    GOAWAY,
    HEADERS,
    SETTINGS,
    frame,
    grpc_call_opening,
    h2_outcome,
    settings_frames,
)


def test_summary_counts_failures_by_door_and_growth_after_warmup() -> None:
    baseline, soak = Tally(), Tally()
    for door in ("classify", "v2", "grpc"):
        for _ in range(100):
            baseline.good(door, "OK" if door == "grpc" else "200", 10.0, None)
    for ms, stages in [(12.0, (10.0, 2.0, 1.0, 5.0))] * 99 + [(30.0, (28.0, 2.0, 20.0, 5.0))]:
        soak.good("classify", "200", ms, stages)
    soak.good("grpc", "OK", 40.0, None)
    soak.good("classify", "503", 1.0, None)
    soak.good("grpc", "UNAVAILABLE (transport)", 1.0, None)
    soak.count("classify", "json_deep", "413")
    soak.count("v2", "wide_16bit_40mp", "504")
    soak.count("grpc", "huge_shape", "INTERNAL")
    soak.count("grpc", "pdf", "UNAVAILABLE")
    soak.count("grpc", "message_never_sent", "DEADLINE_EXCEEDED (late)")
    soak.count("classify", "slow_headers", "closed")
    # 5 min soak from t=100: warm-up to t=160; first minute after it ~400 MiB with one spike, last minute ~420.
    rss = [(100.0 + 5 * i, 200.0 + 200 * min(1, i / 4)) for i in range(12)]
    rss += [(160.0 + 5 * i, 400.0) for i in range(12)]
    rss[14] = (rss[14][0], 500.0)  # an in-flight decode of a big image: a peak, not growth
    rss += [(220.0 + 5 * i, 410.0) for i in range(24)]
    rss += [(340.0 + 5 * i, 420.0) for i in range(13)]
    payload = summarize(
        5, baseline, soak, rss, soak_started=100.0, ready=200, good_rate=12.34, rejections={"admission": 3, "pixels": 2}
    )
    assert payload["failures_by_door"] == {"classify": 1, "grpc": 2, "v2": 1} and payload["total_5xx"] == 4
    assert payload["good_failures"] == {"classify 503": 1, "grpc UNAVAILABLE (transport)": 1}
    assert payload["rss_after_warmup_mib"] == (400.0, 500.0) and payload["rss_last_minute_mib"] == (420.0, 420.0)
    assert payload["rss_growth_after_warmup_pct"] == 5.0 and payload["rss_swing_pct"] == 25.0
    assert payload["good_unloaded"] == {"requests": 300, "p50_ms": 10.0, "p99_ms": 10.0}
    assert payload["good_by_door"]["grpc"]["loaded"] == {"requests": 1, "p50_ms": 40.0, "p99_ms": 40.0}
    assert payload["good_by_door"]["v2"]["loaded"]["requests"] == 0
    assert payload["responses"]["classify"]["json_deep"] == {"413": 1} and payload["good_rate_per_s"] == 12.3
    text = render(payload, good_clients=6)
    assert (
        "growth after warm-up 5.0 % (swing 25.0 % over the floor)" in text
        and "| classify | json_deep | 413: 1 |" in text
    )
    assert "first minute after warm-up 400–500, in the last minute 420–420" in text
    assert "Good clients: 6 (a third per door), 12.3 requests/s in all." in text
    assert "Refused by the server (images, by reason): admission 3, pixels 2" in text
    assert "| grpc, beside hostile + slow | 1 | 40.0 | 40.0 | 4.00× |" in text
    slow = payload["good_loaded"]["slowest_1pct"]
    assert slow == {"client_ms": 30.0, "server_total_ms": 28.0, "decode_ms": 2.0, "queue_ms": 20.0, "infer_ms": 5.0}
    assert "(medians, ms): client 30, server_total 28, decode 2, queue 20" in text


def test_summary_of_a_soak_too_short_to_judge() -> None:
    payload = summarize(0.5, Tally(), Tally(), [(0.0, 100.0), (30.0, 100.0)], soak_started=0.0, ready=503)
    assert payload["rss_growth_after_warmup_pct"] is None and not payload["ready_at_end"]
    assert payload["total_5xx"] == 0 and payload["good_loaded"]["slowest_1pct"] is None
    assert "growth after warm-up None" in render(payload)


def test_failures_are_5xx_and_the_grpc_codes_that_stand_for_them() -> None:
    assert is_failure("500") and is_failure("503") and is_failure("INTERNAL") and is_failure("DEADLINE_EXCEEDED")
    assert not any(map(is_failure, ["200", "429", "OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED (late)"]))
    assert not is_failure("UNAVAILABLE (transport)") and not is_failure("ReadTimeout")


class FakeError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)


def test_grpc_outcomes_tell_the_app_from_the_transport_and_a_late_message_from_a_late_answer() -> None:
    answered = (("x-request-id", "abc"),)
    assert grpc_outcome(FakeError(grpc.StatusCode.INVALID_ARGUMENT, "bad", answered)) == "INVALID_ARGUMENT"
    late = FakeError(grpc.StatusCode.DEADLINE_EXCEEDED, "the request message did not arrive within 3 s", answered)
    assert grpc_outcome(late) == "DEADLINE_EXCEEDED (late)"
    assert grpc_outcome(FakeError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", answered)) == "DEADLINE_EXCEEDED"
    assert grpc_outcome(FakeError(grpc.StatusCode.UNAVAILABLE, "closed", ())) == "UNAVAILABLE (transport)"


def test_http2_frames_written_and_read_by_hand() -> None:
    opening = grpc_call_opening("/inference.GRPCInferenceService/ModelInfer")
    assert opening.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") and b"/inference.GRPCInferenceService" in opening
    assert frame(DATA, 0, 1, b"abcd") == b"\x00\x00\x04\x00\x00\x00\x00\x00\x01abcd"
    settings = frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64")
    assert settings_frames(settings + frame(SETTINGS, ACK, 0)) == 1
    assert h2_outcome(settings) is None and h2_outcome(settings[:5]) is None
    assert h2_outcome(settings + frame(HEADERS, END_STREAM | 0x4, 1, b"x")) == "answered"
    assert h2_outcome(settings + frame(GOAWAY, 0, 0, b"\0" * 8)) == "goaway"


def test_the_servers_refusals_are_read_from_its_metrics() -> None:
    text = (
        "# TYPE vitserve_rejections_total counter\n"
        'vitserve_rejections_total{reason="admission"} 12.0\n'
        'vitserve_rejections_created{reason="admission"} 1.7e+09\n'
        'vitserve_rejections_total{reason="client_rate"} 3.0\n'
    )
    assert rejections(text) == {"admission": 12, "client_rate": 3}
