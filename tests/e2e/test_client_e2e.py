"""``vitserve.client`` (sync and async) and ``vitserve predict --url`` against a real ``vitserve serve``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.e2e_server import ServerProcess, free_port, jpeg
from vitserve.admin.main import main
from vitserve.client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("client-images")
    paths = [folder / f"{seed}.jpg" for seed in range(3)]
    for seed, path in enumerate(paths):
        path.write_bytes(jpeg(seed))
    return paths


def test_classify_files_and_bytes_equal_the_raw_api(server: ServerProcess, image_files: list[Path]) -> None:
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in image_files]
    raw = httpx.post(f"{server.url}/classify", files=files, params={"top_k": 3}, timeout=60).json()
    with Client(server.url) as client:
        by_path = client.classify(image_files, top_k=3)
        by_bytes = client.classify(image_files[0].read_bytes(), top_k=3, model="tiny:1")
        assert client.ready()
    assert (by_path.model, by_path.version) == ("tiny", 1)
    for got, expected in zip(by_path.results, raw["results"], strict=True):
        assert [(p.index, p.label) for p in got.predictions] == [
            (p["index"], p["label"]) for p in expected["predictions"]
        ]
        assert [p.score for p in got.predictions] == pytest.approx(
            [p["score"] for p in expected["predictions"]], abs=1e-5
        )
        assert got.timings.batch_size >= 1 and got.timings.infer_ms > 0
    assert by_bytes.results[0].predictions[0].index == by_path.results[0].predictions[0].index


def test_models_and_typed_errors(server: ServerProcess, image_files: list[Path]) -> None:
    image = image_files[0].read_bytes()
    with Client(server.url) as client:
        models = {m.name: m for m in client.models()}
        tiny = client.model("tiny")
        errors = {}
        for name, call in {
            "unknown model": lambda: client.classify(image, model="nosuch"),
            "not loaded": lambda: client.classify(image, model="tiny:2"),
            "top_k": lambda: client.classify(image, top_k=0),
            "too many": lambda: client.classify([image] * 17),
            "not an image": lambda: client.classify(b"not an image"),
            "loopback URL": lambda: client.classify("http://127.0.0.1:9/x.jpg"),
            "deadline": lambda: client.classify(image, timeout_s=1e-6),
        }.items():
            with pytest.raises(Exception) as caught:
                call()
            errors[name] = (type(caught.value), caught.value.code)  # type: ignore[attr-defined]
    assert models["tiny"].serving_version == 1 and [v.version for v in tiny.versions] == [1, 2]
    assert tiny.aliases == {"production": 1} and tiny.versions[0].serving and not tiny.versions[1].loaded
    assert errors == {
        "unknown model": (NotFound, "model_not_found"),
        "not loaded": (NotFound, "model_not_loaded"),
        "top_k": (InvalidRequest, "invalid_request"),
        "too many": (PayloadTooLarge, "payload_too_large"),
        "not an image": (BadRequest, "invalid_image"),
        "loopback URL": (BadRequest, "url_forbidden"),
        "deadline": (DeadlineExceeded, "deadline_exceeded"),
    }
    with Client(f"http://127.0.0.1:{free_port()}", timeout_s=2) as nobody, pytest.raises(ConnectionFailed):
        nobody.models()


@pytest.mark.anyio
async def test_async_client_concurrent_requests(server: ServerProcess, image_files: list[Path]) -> None:
    async with AsyncClient(server.url) as client:
        results = await asyncio.gather(*(client.classify(p, top_k=2) for p in image_files * 2))
        models = await client.models()
    assert [r.results[0].predictions[0].index for r in results[:3]] == [
        r.results[0].predictions[0].index for r in results[3:]
    ]
    assert [m.name for m in models] == ["tiny"]


def test_predict_url_command(
    server: ServerProcess, image_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", *map(str, image_files[:2]), "--url", server.url, "--top-k", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["model"] == {"name": "tiny", "version": 1}
    assert [r["image"] for r in out["results"]] == [str(p) for p in image_files[:2]]
    assert all(len(r["predictions"]) == 2 for r in out["results"])
    refused = main(["predict", str(image_files[0]), "--url", server.url, "--model", "nosuch"])
    assert refused == 1 and "model_not_found" in capsys.readouterr().err


def test_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, vitserve.client; print(sorted(m for m in sys.modules if m.startswith(('vitserve.', 'mindspore'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert all(m.startswith("vitserve.client") for m in eval(out)), out
