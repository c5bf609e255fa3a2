"""Triton Inference Server beside ``vitserve serve``: both over the Open Inference Protocol, one load generator.

    bash scripts/install_triton_peer.sh                                      # .venv-triton, once
    python -m vitserve.benchmarks.http_bench --peers triton --quick --seconds 2 --warmup-s 1    # tiny model
    python -m vitserve.benchmarks.http_bench --peers triton --full --precisions fp32 bf16 int8-static \\
        --concurrency 1 16 --seconds 20 --out DIR                            # ViT-B/16 at 224

The same store version (seeded random weights, as the HTTP benchmark's) is served at each precision both servers
run by ``vitserve serve`` (OpenVINO engine, /v2) and by Triton (``triton_peer.py``: tritonserver 2.51 from the
``nvidia-pytriton`` wheel, its Python backend, OpenVINO on the IR ``vitserve export --format openvino`` writes,
Triton's dynamic batcher, max batch 8 for both). ``int8-static`` is the same NNCF IR our server compiles,
quantised first and calibrated on the benchmark's photographs; ``bf16`` only where the CPU has native bf16.
``int8`` (ONNX Runtime's dynamic int8 graph) is not offered: the Triton peer runs OpenVINO, and Triton's ONNX
Runtime backend is not in that wheel.

One load generator (``oip_load.py``, Triton's ``tritonclient``, in the peer's environment) drives both: closed
loop, N clients, one JPEG per request as the ``image`` BYTES input, top 5 of ``probabilities`` through the
classification extension; ``--warmup-s`` of load, then ``--seconds`` measured. All servers start together and
are measured one at a time, the others paused (``server_fleet``), level by level (at each concurrency, ours then
Triton at each precision), so that a drift of the shared machine's speed falls on both alike. Before timing,
every server classifies each photograph once and is checked against our fp32 server: the top-1 on the photograph
with the widest margin must agree (else the row is an error, not timed); the top-1 agreement over all of them
and the largest probability difference are recorded. Writes triton.json, triton.md and triton.png to --out.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vitserve.benchmarks import report, triton_report
from vitserve.benchmarks.http_bench import READY_TIMEOUT_S, batch_counters, free_ports, ours_spec, realistic_jpegs
from vitserve.benchmarks.server_fleet import ServerProcess, ServerSpec, measuring, server_fleet
from vitserve.model_store.card import Card
from vitserve.model_store.store import ModelStore

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent  # the repository's benchmarks/ (resolved through the editable links)
TRITON_ENV = HERE.parent / ".venv-triton"
PEER_SCRIPT = HERE / "triton_peer.py"
LOAD_SCRIPT = HERE / "oip_load.py"
PRECISIONS = ("fp32", "bf16", "int8-static")
CONCURRENCY = (1, 16)
TOP_K = 5
REQUEST_TIMEOUT_S = 300.0  # as in the HTTP benchmark: 64 clients queue for a while on ViT-B/16


class TritonPeerUnavailable(RuntimeError):
    """The peer's environment is missing: ``scripts/install_triton_peer.sh`` builds it."""


def triton_python(env: Path = TRITON_ENV) -> Path:
    """The peer environment's interpreter, with PyTriton and tritonclient importable, or ``TritonPeerUnavailable``."""
    python = env / "bin" / "python"
    probe = [str(python), "-I", "-c", "import pytriton.triton, tritonclient.http.aio, openvino, PIL"]
    try:
        works = python.exists() and subprocess.run(probe, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        works = False
    if not works:
        raise TritonPeerUnavailable(f"{env} has no working PyTriton: `bash scripts/install_triton_peer.sh` builds it")
    return python


def infer_path(name: str) -> str:
    return f"/v2/models/{name}/infer"


def model_dirs(
    store: ModelStore, card: Card, precisions: Sequence[str], jpegs: Sequence[bytes], root: Path
) -> dict[str, Path]:
    """Triton's model folder per precision: the IR ``vitserve export --format openvino`` writes (fp32 and bf16:
    the precision is a compile hint) beside its ``preprocessing.json`` and labels, and for ``int8-static`` the same
    folder with our NNCF IR, quantised first (calibrated on ``jpegs``; ``export`` writes fp32 IRs only)."""
    from vitserve.runtime.export_cache import cached_static_int8, static_int8_graph
    from vitserve.runtime.model_export import export_version
    from vitserve.vit.preprocess import preprocess

    exported = export_version(store, card, root / "export", fmt="openvino").version_dir
    folders = {p: exported for p in precisions if p != "int8-static"}
    if "int8-static" in precisions:
        cached_static_int8(store, card, preprocess(list(jpegs), card.data))
        graph = static_int8_graph(store, card)  # the verified bytes our server compiles
        folder = root / "int8-static"
        folder.mkdir(parents=True)
        (folder / "model.xml").write_bytes(graph.model)
        (folder / "model.bin").write_bytes(graph.weights or b"")
        spec = json.loads((exported / "preprocessing.json").read_text(encoding="utf-8"))
        (folder / "preprocessing.json").write_text(json.dumps({**spec, "precision": "int8-static"}), encoding="utf-8")
        (folder / "labels.json").write_bytes((exported / "labels.json").read_bytes())
        folders["int8-static"] = folder
    return folders


def triton_spec(
    python: Path, model_dir: Path, name: str, precision: str, threads: int, ports: Sequence[int], workdir: Path
) -> ServerSpec:
    """``triton_peer.py`` serving ``model_dir`` as ``name`` at ``precision``; ``ports``: HTTP, gRPC, metrics."""
    scratch = workdir / f"triton-{precision}"
    scratch.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-I", str(PEER_SCRIPT), "--model-dir", str(model_dir), "--name", name]
    command += ["--precision", precision, "--threads", str(threads), "--workdir", str(scratch)]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    command += ["--info", str(scratch / "info.json")]
    return ServerSpec(
        label=f"triton[openvino] {precision}",
        role="peer",
        precision=precision,
        command=command,
        port=ports[0],
        health_path=f"/v2/models/{name}/ready",
        predict_path=infer_path(name),
    )


def oip(python: Path, mode: str, server: ServerProcess, name: str, jpeg_dir: Path, **options: float) -> dict[str, Any]:
    """Run the load generator (``oip_load.py MODE``) against ``server``; its JSON answer."""
    command = [str(python), "-I", str(LOAD_SCRIPT), mode, "--url", f"127.0.0.1:{server.spec.port}", "--model", name]
    command += ["--jpegs", str(jpeg_dir)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    timeout = options.get("seconds", 0) + options.get("warmup_s", 0) + REQUEST_TIMEOUT_S + 120
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"oip_load.py {mode} failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def counters(server: ServerProcess, name: str, metrics_port: int | None) -> tuple[float, float]:
    """(images, model executions) so far, from the server's metrics: ours /metrics, Triton's ``metrics_port``."""
    if metrics_port is None:
        images, calls, _ = batch_counters(server.url)
        return images, calls
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    totals = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:  # counters' samples are renamed ``<family>_total`` by the parser
            if family.name in totals and sample.labels.get("model") == name:
                totals[family.name] += sample.value
    return totals["nv_inference_count"], totals["nv_inference_exec_count"]


def check(rows: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], index: int) -> dict[str, Any]:
    """A server's probabilities per photograph against our fp32 server's: top-1 on the reference photograph
    ``index`` and on all, and the largest probability difference."""
    theirs, ours = np.asarray(rows), np.asarray(reference)
    same = theirs.argmax(axis=1) == ours.argmax(axis=1)
    return {
        "top1": int(theirs[index].argmax()),
        "top1_ours": int(ours[index].argmax()),
        "same_top1": bool(same[index]),
        "top1_agreement": float(same.mean()),
        "photos": len(same),
        "max_abs_prob_diff": float(np.abs(theirs - ours).max()),
    }


def widest_margin(reference: Sequence[Sequence[float]]) -> int:
    """The photograph whose top-1 leads its runner-up by the widest margin: a legitimate difference (bf16, int8,
    another decode of the JPEG) cannot flip it."""
    top2 = np.sort(np.asarray(reference), axis=1)[:, -2:]
    return int(np.argmax(top2[:, 1] - top2[:, 0]))


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every server of one run shares: the store version, our engine, the photographs, the load generator."""

    store: ModelStore
    card: Card
    engine: str  # the engine our server runs (``--engine`` resolved on the CPU)
    threads: int
    max_batch_size: int
    jpegs: list[bytes]
    jpeg_dir: Path  # the same photographs as files, for the load generator
    python: Path  # the peer environment's interpreter: runs Triton and the load generator
    workdir: Path


def run_triton_bench(
    out: Path,
    *,
    full: bool = False,
    engine: str = "auto",
    threads: int | None = None,
    precisions: Sequence[str] = PRECISIONS,
    concurrency: Sequence[int] = CONCURRENCY,
    seconds: float = 20.0,
    warmup_s: float = 5.0,
    max_batch_size: int = 8,
    triton_env: Path = TRITON_ENV,
) -> dict[str, Any]:
    """Run the comparison and write triton.json/.md/.png into ``out``; returns the payload. Raises
    ``TritonPeerUnavailable`` before anything starts when the peer's environment is missing."""
    from vitserve.benchmarks.runners import bench_workdir
    from vitserve.runtime.onnx_engine import default_threads

    python = triton_python(triton_env)
    threads = threads or default_threads()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with bench_workdir() as workdir:
        setup = _setup(workdir, full, engine, threads, max_batch_size, python)
        runnable, skipped = _runnable(precisions, setup.engine)
        pairs, metrics = _server_pairs(setup, runnable)
        options = {"seconds": seconds, "warmup_s": warmup_s, "top_k": TOP_K}
        specs = {spec.label: spec for pair in pairs for spec in pair}  # once each, the reference first
        with server_fleet(list(specs.values()), workdir, READY_TIMEOUT_S) as servers:
            answer, index, rows = _check_all(setup, servers)
            by_label = {server.spec.label: server for server in servers}
            for c in concurrency:  # level by level, ours then Triton at each precision: a drift falls on both alike
                for spec in (spec for pair in pairs[1:] for spec in pair):
                    level_options = {"concurrency": c, **options}
                    _level(setup, by_label[spec.label], rows[spec.label], metrics.get(spec.label), level_options)
        measured = [rows[spec.label] for pair in pairs[1:] for spec in pair]
        payload = {
            "benchmark": "http-triton",
            "mode": "full" if full else "quick",
            "date_utc": started,
            "model": setup.card.ref,
            "config": setup.card.config.to_dict(),
            "engine": setup.engine,
            "max_batch_size": max_batch_size,
            "seconds_per_level": seconds,
            "warmup_s": warmup_s,
            "concurrency": list(concurrency),
            "top_k": TOP_K,
            "jpeg": {"count": len(setup.jpegs), "mean_bytes": float(np.mean([len(j) for j in setup.jpegs]))},
            "environment": report.environment(threads),
            "ours_server": answer["server"],
            "reference_jpeg": index,
            "servers": measured + skipped,
            "ratios": triton_report.ratios(measured),
        }
    triton_report.write_outputs(out, payload)
    return payload


def _setup(workdir: Path, full: bool, engine: str, threads: int, max_batch_size: int, python: Path) -> Setup:
    """A store with one seeded-random version (the tiny config, or ViT-B/16 with ``full``) and the photographs."""
    from vitserve.benchmarks.engine_bench import QUICK_CONFIG, bench_store
    from vitserve.runtime.engine import resolve_kind
    from vitserve.vit.config import DataConfig, get_variant

    variant = get_variant("vit_base_patch16_224")
    config, data = (variant.config, variant.data) if full else (QUICK_CONFIG, DataConfig(img_size=64))
    store, card = bench_store(config, data, workdir / "store")
    jpegs = realistic_jpegs()
    jpeg_dir = workdir / "jpegs"
    jpeg_dir.mkdir()
    for index, jpeg in enumerate(jpegs):
        (jpeg_dir / f"{index}.jpg").write_bytes(jpeg)
    return Setup(store, card, resolve_kind(engine, "CPU"), threads, max_batch_size, jpegs, jpeg_dir, python, workdir)


def _server_pairs(setup: Setup, precisions: Sequence[str]) -> tuple[list[tuple[ServerSpec, ...]], dict[str, int]]:
    """``[(ours fp32,), (ours P, Triton P) per precision]`` (the first: the reference every answer is checked
    against, also the fp32 pair's ours) and each Triton server's metrics port."""
    folders = model_dirs(setup.store, setup.card, precisions, setup.jpegs, setup.workdir / "triton-models")
    ports = iter(free_ports(1 + 4 * len(precisions)))

    def ours(precision: str) -> ServerSpec:
        spec = ours_spec(
            setup.store,
            setup.card,
            engine=setup.engine,
            precision=precision,
            max_batch_size=setup.max_batch_size,
            threads=setup.threads,
            port=next(ports),
        )
        return dataclasses.replace(spec, health_path="/v2/health/ready", predict_path=infer_path(setup.card.name))

    reference = ours("fp32")
    pairs: list[tuple[ServerSpec, ...]] = [(reference,)]
    metrics: dict[str, int] = {}
    for precision in precisions:
        peer_ports = [next(ports) for _ in range(3)]
        peer = triton_spec(
            setup.python, folders[precision], setup.card.name, precision, setup.threads, peer_ports, setup.workdir
        )
        metrics[peer.label] = peer_ports[2]
        pairs.append((reference if precision == "fp32" else ours(precision), peer))
    return pairs, metrics


def _check_all(setup: Setup, servers: Sequence[ServerProcess]) -> tuple[dict[str, Any], int, dict[str, dict[str, Any]]]:
    """Our fp32 server's answers (``servers[0]``), the reference photograph, and every server's checked row."""
    if servers[0].error:
        raise RuntimeError(servers[0].error)
    with measuring(servers[0]):
        answer = oip(setup.python, "check", servers[0], setup.card.name, setup.jpeg_dir)
    index = widest_margin(answer["probabilities"])
    rows = {server.spec.label: _checked(setup, server, answer["probabilities"], index) for server in servers}
    return answer, index, rows


def _runnable(precisions: Sequence[str], engine: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The precisions both servers run here, and a skipped row (with the reason) per server for the others."""
    from vitserve.benchmarks.runners import Unsupported, require_precision

    runnable, skipped = [], []
    for precision in dict.fromkeys(precisions):
        try:
            if precision not in PRECISIONS:
                raise Unsupported(f"{precision}: the Triton peer runs OpenVINO at {', '.join(PRECISIONS)} only")
            if precision != "fp32" and engine != "openvino":
                raise Unsupported(f"the {engine} engine does not run {precision}")
            require_precision(precision)
        except Unsupported as err:
            for label, role in ((f"vitserve[{engine}] {precision}", "ours"), (f"triton[openvino] {precision}", "peer")):
                skipped.append({"label": label, "role": role, "precision": precision, "skipped": str(err)})
            continue
        runnable.append(precision)
    return runnable, skipped


def _checked(setup: Setup, server: ServerProcess, reference: Sequence[Sequence[float]], index: int) -> dict[str, Any]:
    """``server``'s row: its answers checked against our fp32 server's (an error row, stopped, when the top-1 on
    the reference photograph differs or it failed to start), what it runs, and room for its levels."""
    spec = server.spec
    row: dict[str, Any] = {"label": spec.label, "role": spec.role, "precision": spec.precision}
    if server.error:
        return {**row, "error": server.error}
    try:
        with measuring(server):
            answer = oip(setup.python, "check", server, setup.card.name, setup.jpeg_dir)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        server.stop()
        return {**row, "error": f"{err}; its log ends:\n{server.log_tail()}"}
    row["server"] = answer["server"]
    row["check"] = found = check(answer["probabilities"], reference, index)
    info = Path(spec.command[spec.command.index("--info") + 1]) if "--info" in spec.command else None
    if info is not None and info.is_file():
        row["runs"] = json.loads(info.read_text(encoding="utf-8"))  # what OpenVINO says the peer runs
    logger.info("%s (%s %s): %s", spec.label, answer["server"]["name"], answer["server"]["version"], found)
    if not found["same_top1"]:
        server.stop()
        return {**row, "error": f"top-1 {found['top1']} differs from ours ({found['top1_ours']}): not timed"}
    return {**row, "levels": []}


def _level(
    setup: Setup, server: ServerProcess, row: dict[str, Any], metrics_port: int | None, options: dict[str, float]
) -> None:
    """One closed-loop level on a checked server, added to its row with the mean batch it formed; a failure
    becomes the row's ``error`` (and stops the server): a failing server must not sink the whole benchmark."""
    if "levels" not in row or server.stopped:
        return
    try:
        with measuring(server):
            before = counters(server, setup.card.name, metrics_port)
            level = oip(setup.python, "load", server, setup.card.name, setup.jpeg_dir, **options)
            after = counters(server, setup.card.name, metrics_port)
            images, batches = (a - b for a, b in zip(after, before, strict=True))
    except (RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError) as err:
        row.pop("levels")
        row["error"] = f"{type(err).__name__}: {err}; its log ends:\n{server.log_tail()}"
        server.stop()
        return
    level["mean_batch_size"] = images / batches if batches else None
    row["levels"].append(level)
    logger.info(
        "%s c=%d: %.2f img/s, p50 %s ms, mean batch %s, failures %s",
        server.spec.label,
        level["concurrency"],
        level["images_per_s"],
        level["p50_ms"],
        level["mean_batch_size"],
        level["failures"] or "none",
    )
