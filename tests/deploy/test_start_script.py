"""The container, without Docker: deploy/scripts/build.sh builds the runtime into a fresh prefix (the image's build
stage), then the image's ENTRYPOINT + CMD (dumb-init → start.sh → `vitserve serve`) runs from that prefix with a
clean environment against a store on disk. The service must get ready, classify a real photograph, pass the
image's HEALTHCHECK, and drain and exit 0 on SIGTERM, as `docker stop` would ask.

Two things differ from the image, both to keep the test to minutes: MindSpore (a 2.5 GB wheel) is shared from this
venv through PYTHONPATH instead of being unpacked again (every other dependency is installed by build.sh), and
the store holds a tiny model published here instead of the digits model `vitserve bootstrap` trains.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.deploy.dockerfile_instructions import healthcheck_command, read_instructions
from tests.deploy.k8s_objects import REPO
from tests.tiny import TINY

pytestmark = pytest.mark.slow

PREFIX_IN_IMAGE = "/opt/vitserve"
MODEL = "tiny-vit"
LABELS = [f"class-{i}" for i in range(10)]
READY_WITHIN_S = 300  # a bound, not a performance claim: a stuck start fails instead of hanging CI
STOP_WITHIN_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def share_mindspore(into: Path) -> Path:
    """A directory holding only MindSpore (package + metadata, symlinked from this venv), for PYTHONPATH."""
    into.mkdir()
    spec = importlib.util.find_spec("mindspore")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = importlib.metadata.distribution("mindspore")
    info = Path(str(dist.locate_file(f"mindspore-{dist.version}.dist-info")))
    for source in (package, info):
        assert source.exists(), source
        (into / source.name).symlink_to(source)
    return into


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prefix, shared-MindSpore dir): build.sh run as the Dockerfile runs it, into a fresh prefix."""
    root = tmp_path_factory.mktemp("image")
    shared = share_mindspore(root / "shared-site")
    prefix = root / "opt-vitserve"
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    # The machine's pip configuration (its package index) is part of the build host, so PIP_* passes through.
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env |= {"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHON": str(base_python), "PYTHONPATH": str(shared)}
    build = subprocess.run(
        ["bash", str(REPO / "deploy" / "scripts" / "build.sh"), str(prefix), str(REPO)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, f"build.sh failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    for path in ("bin/vitserve", "bin/dumb-init", "scripts/start.sh", "scripts/train.sh"):
        assert (prefix / path).is_file(), f"{path} missing from the built prefix"
    # A regular install, not a link back to this checkout.
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    assert (site / "vitserve" / "service" / "app.py").is_file()
    return prefix, shared


def test_the_distribution_installs_one_import_name_and_its_command(built: tuple[Path, Path]) -> None:
    """A regular (non-editable) install adds one top-level name, ``vitserve``, and a working console script."""
    prefix, shared = built
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    record = next(site.glob("vitserve-*.dist-info")) / "RECORD"
    installed = [line.split(",")[0] for line in record.read_text().splitlines() if line]
    top_level = {path.split("/")[0] for path in installed if not path.startswith("../")}  # ../ = bin/ scripts
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"vitserve"}, sorted(top_level)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(prefix), "PYTHONPATH": str(shared)}
    for command in (
        [str(prefix / "bin" / "vitserve"), "--help"],
        [str(prefix / "bin" / "python"), "-m", "vitserve", "--help"],
    ):
        result = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "serve" in result.stdout and "models" in result.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one real (tiny, untrained) MindSpore ViT as `tiny-vit` version 1."""
    from vitserve.model_store import ModelStore
    from vitserve.vit.checkpoint import state_dict
    from vitserve.vit.config import DataConfig
    from vitserve.vit.model import create_model

    root = tmp_path_factory.mktemp("models")
    config = TINY.replace(num_classes=len(LABELS))
    state = state_dict(create_model(config))
    lineage = {"source": "tests/deploy/test_start_script.py: random initialisation"}
    ModelStore(root).publish(MODEL, state, config, DataConfig(img_size=32), LABELS, lineage=lineage)
    return root


def image_command(prefix: Path, keyword: str) -> list[str]:
    """The Dockerfile's exec-form ENTRYPOINT/CMD, with the image's prefix mapped to the built one."""
    (ins,) = [i for i in read_instructions(REPO / "Dockerfile") if i.keyword == keyword]
    return [w.replace(PREFIX_IN_IMAGE, str(prefix)) for w in ins.exec_form()]


@pytest.fixture
def container(built: tuple[Path, Path], store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The image's start command, running from a clean environment; yields (process, port)."""
    prefix, shared = built
    port = free_port()
    env = {  # env -i, plus what the image's ENV and `docker run -e` would set
        "PATH": f"{prefix}/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(shared),
        "PYTHONUNBUFFERED": "1",
        "VITSERVE_HOST": "127.0.0.1",
        "VITSERVE_PORT": str(port),
        "VITSERVE_STORE_ROOT": str(store),
        "VITSERVE_BOOTSTRAP": "1",  # on, as in the image: the store is not empty, so start.sh must skip it
        "VITSERVE_DEFAULT_MODEL": MODEL,
        "VITSERVE_MAX_BATCH_SIZE": "2",
        "VITSERVE_DRAIN_TIMEOUT_S": "20",
        "VITSERVE_COMPILE_CACHE_DIR": str(tmp_path / "compile-cache"),
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    log = (tmp_path / "container.log").open("wb")
    command = image_command(prefix, "ENTRYPOINT") + image_command(prefix, "CMD")
    proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def container_log(tmp_path: Path) -> str:
    return (tmp_path / "container.log").read_text(errors="replace")


def wait_ready(proc: subprocess.Popen[bytes], port: int, tmp_path: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the container exited with {proc.returncode}:\n{container_log(tmp_path)}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready within {READY_WITHIN_S} s:\n{container_log(tmp_path)}")


def photo_jpeg() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_container_start_serves_then_drains_on_sigterm(
    container: tuple[subprocess.Popen[bytes], int], built: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, port = container
    wait_ready(proc, port, tmp_path)

    reply = httpx.post(
        f"http://127.0.0.1:{port}/classify",
        params={"top_k": 3},
        files={"file": ("astronaut.jpg", photo_jpeg(), "image/jpeg")},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == {"name": MODEL, "version": 1}
    (result,) = body["results"]
    predictions = result["predictions"]
    assert len(predictions) == 3
    assert all(p["label"] == LABELS[p["index"]] for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6

    # The image's HEALTHCHECK, run as Docker runs it (inside the container's environment).
    (check,) = [i for i in read_instructions(REPO / "Dockerfile") if i.keyword == "HEALTHCHECK"]
    prefix, _ = built
    command = [w if w != "python" else str(prefix / "bin" / "python") for w in healthcheck_command(check)]
    health = subprocess.run(command, env={"VITSERVE_PORT": str(port)}, capture_output=True, timeout=30)
    assert health.returncode == 0, health.stderr

    # `docker stop`: SIGTERM to PID 1 (dumb-init), which hands it to the server.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_WITHIN_S) == 0, container_log(tmp_path)
    log = container_log(tmp_path)
    assert "already holds models: no bootstrap" in log
    assert "draining" in log and "drained" in log, log
    assert "Traceback" not in log, log
