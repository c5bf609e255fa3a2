"""The quick benchmarks run end to end and write well-formed JSON, Markdown and PNG (no timings judged); the HTTP one
drives our server and the peer servers, which must answer the reference JPEG as ours does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vitserve.benchmarks.peer_servers import PEER_KINDS
from vitserve.benchmarks.runners import RUNNERS
from vitserve.runtime.cpu_precision import native_bf16

# The largest logit difference from MindSpore fp32 each precision may show on the quick model (logits ~0.1-1):
# fp32 kernels differ in summation order only; bf16 keeps 8 mantissa bits (measured ~2e-3); int8 ~1e-2.
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "int8": 0.05}
# Static int8 fixes activation ranges from calibration photographs; the check input is Gaussian noise, partly
# outside them, so it clips more than dynamic int8 (measured ~0.1).
STATIC_INT8_TOLERANCE = 0.2

EXPECTED_RUNNERS = {
    "mindspore[mindspore] fp32",
    "onnxruntime[mindspore-export] fp32",
    "onnxruntime[mindspore-export] int8",
    "openvino[mindspore-export-nncf] int8",
    "openvino[mindspore-export] fp32",
    "torch[torch] fp32",
    "onnxruntime[torch-export] fp32",
    "openvino[torch-export] fp32",
    "onnxruntime[torch-export] int8",
}


@pytest.mark.slow
def test_quick_engine_bench_writes_json_markdown_and_png(tmp_path: Path) -> None:
    # A subprocess: the benchmark sets MindSpore's global context and thread pools, as an entry point does.
    command = [sys.executable, "-m", "vitserve.benchmarks.engine_bench", "--quick", "--out", str(tmp_path)]
    command += ["--batch-sizes", "1", "2", "--iters", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    payload = json.loads((tmp_path / "engine.json").read_text())
    measured = [r for r in payload["results"] if "images_per_s" in r]
    assert {r["label"] for r in measured} >= EXPECTED_RUNNERS
    for row in measured:
        assert row["batch"] in (1, 2) and row["iters"] == 1 and row["images_per_s"] > 0
        assert row["p50_ms"] <= row["p99_ms"] and row["share_of_ceiling"] > 0
        assert row["precision"] == row["dtype"]  # labelled by what the runtime says it computed
        if row["role"] != "reference":  # every engine computes MindSpore's function, at its own precision
            static = row["graph"].endswith("-nncf")
            assert row["max_abs_diff_vs_mindspore"] < (STATIC_INT8_TOLERANCE if static else TOLERANCE[row["precision"]])
    skipped = [r for r in payload["results"] if "batch" not in r]
    assert all(r.get("skipped") for r in skipped), skipped  # only "not meaningful here", never an error
    # Every runner is either measured or skipped with its reason; bf16 rows exactly where the CPU has bf16.
    assert {r["label"] for r in payload["results"]} == {spec.label for spec in RUNNERS}
    bf16_measured = {r["label"] for r in measured if r["precision"] == "bf16"}
    bf16_runners = {spec.label for spec in RUNNERS if spec.dtype == "bf16"}
    assert bf16_measured == (bf16_runners if native_bf16() else set()), payload["results"]
    assert all("bf16" in r["skipped"] for r in skipped if r["dtype"] == "bf16")
    env = payload["environment"]
    assert env["threads"] == 1 and env["versions"]["mindspore"] and env["versions"]["onnxruntime"]
    ceiling = payload["ceiling"]
    assert ceiling["gemm_fp32_gflops"] > 0 and ceiling["gflop_per_image"] > 0
    assert ceiling["gemm_fp32_gflops_openvino"] > 0 and ceiling["gemm_int8_gops_openvino"] > 0
    assert ("gemm_bf16_gflops" in ceiling) == native_bf16()
    assert set(payload["summary"]["ratios"]) >= {"ours_fp32_vs_best_fp32_peer", "ours_fp32_vs_fp32_gemm_ceiling"}

    table = (tmp_path / "engine.md").read_text()
    assert table.startswith("| engine[graph] dtype |") and all(label in table for label in EXPECTED_RUNNERS)
    assert (tmp_path / "engine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The largest softmax-score difference from our fp32 server each precision may show on the reference JPEG. fp32
# servers differ by ~1e-8 (our server decodes the JPEG at a reduced scale, the peers in full); a server that
# normalised with the wrong mean/std differs by ~3e-3 with the same top-1, a wrong model by more.
# Static int8 is calibrated on the benchmark's 8 photographs (measured 5e-4 on the tiny model).
SCORE_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-3, "int8": 2e-3, "int8-static": 1e-2}
SERVERS = {
    "vitserve[openvino] fp32",
    "vitserve[onnxruntime] int8",
    "vitserve[openvino] int8-static",
    "vitserve[openvino] bf16",
    *(kind.label for kind in PEER_KINDS),
}


@pytest.mark.slow
def test_quick_http_bench_drives_a_real_server_and_the_peer_servers(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "vitserve.benchmarks.http_bench", "--quick", "--out", str(tmp_path)]
    command += ["--concurrency", "1", "16", "--max-batch-size", "8", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    payload = json.loads((tmp_path / "http.json").read_text())
    assert payload["engine"] == "openvino"  # what auto picks on CPU
    assert [level["concurrency"] for level in payload["levels"]] == [1, 16]
    for level in payload["levels"]:
        assert level["ok"] == level["requests"] and not level["failures"]  # every request answered 200
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert 1 <= level["mean_batch_size"] <= 8 and level["e2e_over_engine"] > 0
        # The server timed its own model calls: never longer than the level, and the images it computed match.
        assert 0 < level["engine_busy_share"] <= 1
        assert level["engine_in_server_images_per_s"] >= level["images_per_s"]
    assert payload["levels"][0]["mean_batch_size"] == 1  # one client at a time cannot share a batch
    assert "healthz_p50_ms" not in payload["levels"][0]  # /healthz is polled at 16 and 64 clients only
    busy = payload["levels"][1]
    assert busy["healthz_polls"] >= 1 and not busy["healthz_failures"]
    assert 0 < busy["healthz_p50_ms"] <= busy["healthz_p99_ms"]
    assert payload["jpeg"]["size"] == [500, 375] and payload["preprocess_ms_one_core"] > 0

    peers = payload["peers"]
    assert peers["threads"] == 1 and 0 <= peers["reference_jpeg"] < payload["jpeg"]["count"]
    rows = {row["label"]: row for row in peers["servers"]}
    assert set(rows) == SERVERS  # every server measured, or skipped with its reason
    assert peers["servers"][0]["label"] == "vitserve[openvino] fp32" and "check" not in peers["servers"][0]
    for label, row in rows.items():
        assert "error" not in row, (label, row["error"])
        if row["precision"] == "bf16" and not native_bf16():
            assert "bf16" in row["skipped"] and "levels" not in row
            continue
        assert "skipped" not in row, (label, row["skipped"])
        expected = [1] if row["role"] == "overhead" else [1, 16]
        assert [level["concurrency"] for level in row["levels"]] == expected
        for level in row["levels"]:
            assert level["ok"] == level["requests"] and not level["failures"] and level["images_per_s"] > 0
            assert level["p50_ms"] <= level["p99_ms"]
        if row["role"] == "overhead" or row is peers["servers"][0]:
            continue
        # The same model and preprocessing as ours: the reference JPEG's top-1, and its scores, agree.
        check = row["check"]
        assert check["same_top1"] and check["top1"] == check["top1_ours"], (label, check)
        assert check["classes_compared"] == payload["config"]["num_classes"]
        assert check["max_abs_score_diff"] <= SCORE_TOLERANCE[row["precision"]], (label, check)
    assert peers["litserve_noop_p50_ms_at_1"] == rows["litserve[no-op]"]["levels"][0]["p50_ms"] > 0
    ratios = peers["ratios"]
    expected_ratios = {"ours_fp32_vs_best_fp32_peer_images_per_s_at_16", "ours_p50_vs_best_peer_p50_at_1_fp32"}
    if native_bf16():
        expected_ratios |= {
            "ours_reduced_vs_best_reduced_peer_images_per_s_at_16",
            "ours_p50_vs_best_peer_p50_at_1_bf16",
        }
    assert set(ratios) == expected_ratios
    for entry in ratios.values():
        assert entry["value"] > 0 and rows[entry["ours"]]["role"] == "ours" and rows[entry["peer"]]["role"] == "peer"

    table = (tmp_path / "http.md").read_text()
    assert table.startswith("| concurrency |") and "## Peer servers" in table
    assert (
        all(label in table for label, row in rows.items() if "levels" in row)
        and "Threads: every server is held to 1 (" in table
    )
    assert (tmp_path / "http.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
