"""The soak and the fairness measurements run end to end against a real server, briefly: every door answers
the good clients, every hostile and slow kind reaches its door and gets an answer, no request meets a bug (500,
INTERNAL, UNKNOWN), and the fairness figures are well formed. No timing is judged: that is the full runs' job,
on a quiet machine (benchmarks/README.md, "Soak")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitserve.benchmarks import fairness, soak


@pytest.mark.slow
def test_a_short_soak_reaches_every_door_and_meets_no_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "CAPACITY_PROBE_S", 4.0)
    payload = soak.run_soak(tmp_path, minutes=0.25, baseline_s=4.0)
    responses = payload["responses"]
    assert {"classify", "v2", "grpc", "http", "admin"} <= set(responses)
    for door in ("classify", "v2", "grpc"):
        assert payload["good_by_door"][door]["loaded"]["requests"] > 0, (door, responses[door].get("good"))
        assert {"good", "over_rate", "spoofer", "garbage_image", "wide_16bit_40mp"} <= set(responses[door]), door
    assert {"slow_headers", "slow_body"} <= set(responses["classify"]) & set(responses["v2"])
    assert {"unicode_model", "binary_bomb", "huge_shape", "json_deep"} <= set(responses["v2"])
    assert {"unicode_version", "many_inputs", "message_never_sent", "slow_message"} <= set(responses["grpc"])
    bugs = {
        (door, kind, outcome)
        for door, kinds in responses.items()
        for kind, outcomes in kinds.items()
        for outcome in outcomes
        if outcome in ("500", "INTERNAL", "UNKNOWN")
    }
    assert not bugs
    assert payload["ready_at_end"] and json.loads((tmp_path / "soak.json").read_text())["minutes"] == 0.25
    assert "| grpc | good |" in (tmp_path / "soak.md").read_text()


@pytest.mark.slow
def test_a_short_fairness_run_gives_both_figures(tmp_path: Path) -> None:
    payload = fairness.run_fairness(tmp_path, minutes=0.4)
    alone, greedy = payload["alone"], payload["greedy"]
    assert len(alone["rounds"]) == fairness.ROUNDS and alone["ratio"] > 0
    assert all(r["images_per_s"] > 0 for r in alone["rounds"])
    shares = [c["share_pct"] for c in greedy["clients"]]
    assert [c["address"] for c in greedy["clients"]] == ["127.0.0.1", "127.0.0.2"]
    assert all(s > 0 for s in shares) and sum(shares) == pytest.approx(100, abs=0.2)
    assert "Two greedy clients" in (tmp_path / "fairness.md").read_text()
