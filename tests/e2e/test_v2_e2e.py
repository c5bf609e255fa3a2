"""The Open Inference Protocol against a real ``vitserve serve`` (uvicorn + gRPC in one process, MindSpore
GRAPH_MODE, a tiny ViT): Triton's published client library, from its own environment with no vitserve code,
classifies real photographs over HTTP and gRPC and gets ``/classify``'s answers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.e2e_server import REPO, SERVER_SETTINGS, ServerProcess, free_port
from tests.vit.photos import encode, photo
from vitserve.model_store import ModelStore

pytestmark = pytest.mark.slow

TRITON_PYTHON = REPO / ".venv-tritonclient" / "bin" / "python"
PHOTOS = ("astronaut", "coffee", "chelsea")
K = 3


@pytest.fixture(scope="module")
def v2_server(e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    grpc_port = free_port()
    logs = tmp_path_factory.mktemp("v2-logs") / "server.log"
    proc = ServerProcess(e2e_store.root, logs, **SERVER_SETTINGS, grpc_port=grpc_port)
    proc.grpc_address = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = [folder / f"{name}.jpg" for name in PHOTOS]
    for name, path in zip(PHOTOS, paths, strict=True):
        path.write_bytes(encode(photo(name), "JPEG", quality=90))
    return paths


def test_tritonclient_over_http_and_grpc_equals_classify(v2_server: ServerProcess, photo_files: list[Path]) -> None:
    if not TRITON_PYTHON.exists():
        pytest.fail(f"{TRITON_PYTHON} is missing: `bash scripts/install.sh dev` creates Triton's client environment")
    command = [str(TRITON_PYTHON), "-I", str(REPO / "tests/e2e/triton_client.py"), v2_server.url]
    command += [v2_server.grpc_address, "tiny", str(K), *map(str, photo_files)]  # type: ignore[attr-defined]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=photo_files[0].parent)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photo_files]
    classic = httpx.post(f"{v2_server.url}/classify", files=files, params={"top_k": K}, timeout=60).json()
    expected = [[(p["index"], p["label"], p["score"]) for p in r["predictions"]] for r in classic["results"]]
    assert report["vitserve_imported"] is False
    print(json.dumps(report, indent=1))  # the standard client's view, shown with -s
    for transport in ("http", "grpc"):
        seen = report[transport]
        assert (seen["live"], seen["ready"], seen["model_ready"], seen["version_2_ready"]) == (True, True, True, False)
        assert seen["server"]["name"] == "vitserve" and "classification" in seen["server"]["extensions"]
        meta = seen["metadata"]
        assert meta["name"] == "tiny" and meta["versions"] == ["1"] and meta["platform"] == "mindspore"
        assert [i["name"] for i in meta["inputs"]] == ["image", "pixels"]
        assert seen["version"] == "1"
        got = [
            [(int(i), label, float(score)) for score, i, label in (e.split(":", 2) for e in row)]
            for row in seen["classes"]
        ]
        assert [[(i, label) for i, label, _ in row] for row in got] == [
            [(i, label) for i, label, _ in row] for row in expected
        ]
        # Scores to the protocol's six decimals; batches may group the images differently (float sums only).
        flat_got, flat_expected = [s for row in got for *_, s in row], [s for row in expected for *_, s in row]
        assert flat_got == pytest.approx(flat_expected, abs=2e-6)
        assert seen["argmax"] == [r["predictions"][0]["index"] for r in classic["results"]]
