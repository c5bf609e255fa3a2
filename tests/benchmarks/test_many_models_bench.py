"""The many-models benchmark's quick form runs end to end against real servers and writes well-formed output (no
timings judged): cold start of the tiny model, Zipf traffic under a budget, the cache at three duplicate rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_many_models_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "vitserve.benchmarks.many_models", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "many_models.json").read_text())
    (tiny,) = payload["cold_start"]["rows"]
    assert tiny["model"] == "tiny" and tiny["status"] == 200 and tiny["cold_start_s"] > 0 and tiny["memory_mib"] > 0
    zipf = payload["zipf"]
    assert set(zipf["answers"]) <= {"ok", "model_loading", "insufficient_memory"}, zipf["answers"]
    assert zipf["answers"].get("ok", 0) > 0 and zipf["loads_on_demand"] > 0 and 0 < zipf["hit_rate"] <= 1
    cache = {(row["cache"], row["duplicates"]): row for row in payload["cache"]}
    assert set(cache) == {(on, f) for on in (True, False) for f in (0.0, 0.1, 0.5)}
    assert cache[(True, 0.5)]["cache_answered"] > 0.3 and cache[(False, 0.5)]["cache_answered"] == 0
    assert "## Cold start by model size" in (tmp_path / "many_models.md").read_text()
