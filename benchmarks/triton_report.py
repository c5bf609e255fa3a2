"""The Triton comparison's output (``triton_bench``): ours ÷ Triton ratios, triton.json, triton.md, triton.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitserve.benchmarks import report


def level_at(row: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in row.get("levels", []) if lv["concurrency"] == concurrency), None)


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours ÷ Triton per precision and concurrency: images/s (above 1: we serve more) and p50 (below 1: we answer
    sooner); absent where either side has no level."""
    found = []
    for ours in (r for r in rows if r["role"] == "ours"):
        peer = next((r for r in rows if r["role"] == "peer" and r["precision"] == ours["precision"]), None)
        for level in ours.get("levels", []):
            theirs = level_at(peer, level["concurrency"]) if peer else None
            if theirs is None or not theirs["images_per_s"] or not theirs["p50_ms"] or level["p50_ms"] is None:
                continue
            found.append(
                {
                    "precision": ours["precision"],
                    "concurrency": level["concurrency"],
                    "images_per_s": level["images_per_s"] / theirs["images_per_s"],
                    "p50": level["p50_ms"] / theirs["p50_ms"],
                }
            )
    return found


def write_outputs(out: Path, payload: dict[str, Any]) -> None:
    report.write_json(out / "triton.json", payload)
    (out / "triton.md").write_text(markdown(payload), encoding="utf-8")
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
        row["label"]: ([lv["concurrency"] for lv in row["levels"]], [lv["images_per_s"] for lv in row["levels"]])
        for row in payload["servers"]
        if row.get("levels")
    }
    report.line_plot(
        out / "triton.png",
        series,
        title=f"{payload['model']} over the Open Inference Protocol: vitserve and Triton",
        xlabel="concurrent clients",
        ylabel="images/s",
    )


def markdown(payload: dict[str, Any]) -> str:
    """The table (a row per server: img/s, p50/p99 ms and mean batch per concurrency, its answer check), the
    ours ÷ Triton ratios, the machine, and any error."""
    env = payload["environment"]
    headers = ["server", "precision"]
    for c in payload["concurrency"]:
        headers += [f"c{c} img/s", f"c{c} p50 / p99 ms", f"c{c} mean batch"]
    headers += ["top-1 = ours fp32", "max |Δp|", "OpenVINO matmuls"]
    table = []
    for row in payload["servers"]:
        cells: list[object] = [row["label"], row["precision"]]
        if "levels" not in row:
            reason = f"skipped: {row['skipped']}" if "skipped" in row else "error (below)"
            table.append([*cells, reason, *[None] * (len(headers) - 3)])
            continue
        for c in payload["concurrency"]:
            lv = level_at(row, c)
            cells += (
                [lv["images_per_s"], f"{lv['p50_ms']:.1f} / {lv['p99_ms']:.1f}", lv["mean_batch_size"]]
                if (lv and lv["p50_ms"] is not None)
                else [lv["images_per_s"] if lv else None, None, None]
            )
        found = row.get("check", {})
        agreement = f"{found['top1_agreement']:.0%} of {found['photos']}" if found else None
        runs = "/".join(row["runs"]["matmul_precisions"]) if "runs" in row else None  # the peer's own report
        table.append([*cells, agreement, found.get("max_abs_prob_diff"), runs])
    text = f"# vitserve and Triton over the Open Inference Protocol ({payload['mode']}, {payload['model']})\n\n"
    text += report.markdown_table(headers, table)
    text += "\n" + report.markdown_table(
        ["precision", "clients", "img/s ours ÷ Triton", "p50 ours ÷ Triton"],
        [[r["precision"], r["concurrency"], r["images_per_s"], r["p50"]] for r in payload["ratios"]],
    )
    versions = env["versions"]
    text += (
        f"\n- {payload['date_utc']}; {env['cpu']} ({', '.join(env['cpu_flags'])}), {env['cpus_available']} CPUs, "
        f"load average {' '.join(f'{v:.2f}' for v in env['load_average'] or ())}\n"
        f"- every server: inference threads {env['threads']}, max batch {payload['max_batch_size']}; ours: "
        f"`vitserve serve` ({payload['engine']}, {payload['ours_server']['name']} {payload['ours_server']['version']})"
        f"; Triton: tritonserver {_triton_version(payload)} (nvidia-pytriton 0.7.0, Python backend, OpenVINO, "
        f"dynamic batching); OpenVINO {versions.get('openvino')}\n"
        f"- load: one closed-loop generator (tritonclient, `image` BYTES, top {payload['top_k']} by the "
        f"classification extension), {payload['warmup_s']:g} s warm-up then {payload['seconds_per_level']:g} s per "
        f"level; levels interleaved (at each concurrency, ours then Triton at each precision); answers checked on "
        f"{payload['jpeg']['count']} photographs against our fp32 server (reference: photograph "
        f"{payload['reference_jpeg']})\n"
    )
    errors = [f"- {r['label']}: {r['error']}" for r in payload["servers"] if "error" in r]
    return text + ("\nErrors:\n" + "\n".join(errors) + "\n" if errors else "")


def _triton_version(payload: dict[str, Any]) -> str:
    return next((str(r["server"]["version"]) for r in payload["servers"] if r["role"] == "peer" and "server" in r), "?")
