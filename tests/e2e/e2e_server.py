"""End-to-end support: a tiny model for a real store, test images, and a real ``vitserve serve`` process on
127.0.0.1 with a free port (always stopped by its owner)."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

ADMIN_TOKEN = "e2e-admin-token-0123456789"


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


SERVER_SETTINGS: dict[str, object] = {
    "default_model": "tiny",
    "engine": "mindspore",  # the compiled GRAPH_MODE graph (auto may pick a CPU runtime)
    "max_batch_size": 4,
    "max_delay_ms": 30,
    "queue_size": 16,
    "max_images": 16,
    "decode_workers": 2,
    "admin_token": ADMIN_TOKEN,
    "drain_timeout_s": 20,
    "log_level": "INFO",
    # One test process stands for many clients: no per-client request rate, whose 429s (its own tests in
    # tests/service) would otherwise depend on how fast this machine answers the load a test sends.
    "client_rate": 0,
}


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``vitserve serve`` with ``VITSERVE_*`` settings; ``start()`` waits (bounded) until /readyz is 200."""

    def __init__(self, store: Path, log_path: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITSERVE_")}
        env.update({f"VITSERVE_{k.upper()}": str(v) for k, v in settings.items()})
        env.update(VITSERVE_STORE_ROOT=str(store), VITSERVE_PORT=str(self.port), VITSERVE_HOST="127.0.0.1")
        env["GLOG_v"] = "3"  # MindSpore: errors only in the log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vitserve.admin.main", "serve"], cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout_s} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 30 s. Safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        kept = [line for line in text.splitlines() if not line.startswith("[WARNING]")]
        return "\n".join(kept[-lines:])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.group(1))
    return 0.0
