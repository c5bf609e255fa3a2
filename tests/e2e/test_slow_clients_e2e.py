"""Slow and hostile clients against a real ``vitserve serve`` on 127.0.0.1, with raw sockets: partial headers,
silent connections and trickled bodies are cut off; connections are bounded; /admin lives on a unix socket."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.e2e_server import SERVER_SETTINGS, ServerProcess, auth, jpeg
from vitserve.model_store import ModelStore

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def hardened(e2e_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    short = Path(tempfile.mkdtemp(prefix="vs-"))  # unix socket paths are limited to ~100 characters
    sock = short / "admin.sock"
    settings = {
        **SERVER_SETTINGS,
        "header_timeout_s": HEADER_TIMEOUT_S,
        "body_timeout_s": BODY_TIMEOUT_S,
        "max_connections": MAX_CONNECTIONS,
        "keep_alive_timeout_s": 1,
        "admin_socket": sock,
    }
    proc = ServerProcess(e2e_store.root, tmp_path_factory.mktemp("logs") / "server.log", **settings)
    try:
        yield proc.start(), sock
    finally:
        proc.stop()
        shutil.rmtree(short, ignore_errors=True)


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (bounded by ``limit_s``), and how long that took."""
    started = time.monotonic()
    data = b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - started


def test_partial_headers_and_silent_connections_are_closed(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    with connect(server) as partial, connect(server) as silent:
        partial.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ima")
        got, took = read_until_closed(partial, HEADER_TIMEOUT_S + 5)
        assert got == b"" and took < HEADER_TIMEOUT_S + 3, (got, took)
        got, took = read_until_closed(silent, HEADER_TIMEOUT_S + 5)
        assert got == b"" and took < HEADER_TIMEOUT_S + 3


def test_a_trickled_body_gets_408_and_the_connection_closes(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    image = jpeg(1)
    with connect(server) as sock:
        head = "POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        sock.sendall(f"{head}Content-Length: {len(image)}\r\n\r\n".encode())
        started = time.monotonic()
        sent = 0
        answer = b""
        sock.settimeout(0.25)
        while time.monotonic() - started < BODY_TIMEOUT_S + 5 and sent < len(image):
            try:
                sock.sendall(image[sent : sent + 4])
                sent += 4
                answer += sock.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        rest, _ = read_until_closed(sock, 5)
        answer += rest
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer and time.monotonic() - started < BODY_TIMEOUT_S + 4


def test_connections_are_bounded_and_recover(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    hogs = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for hog in hogs:
            hog.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        time.sleep(0.2)
        refused = httpx.get(f"{server.url}/healthz", timeout=5)
        assert refused.status_code == 503
        time.sleep(HEADER_TIMEOUT_S + 0.5)  # the header deadline frees the slots
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        for hog in hogs:
            hog.close()


def test_admin_is_served_on_its_unix_socket_only(hardened: tuple[ServerProcess, Path]) -> None:
    server, sock = hardened
    on_public = httpx.post(f"{server.url}/admin/models/tiny:2/load", headers=auth(), timeout=10)
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://admin", timeout=60) as admin:
        no_token = admin.post("/admin/models/tiny:2/load")
        loaded = admin.post("/admin/models/tiny:2/load", headers=auth())
    assert on_public.status_code == 404
    assert no_token.status_code == 401
    assert loaded.status_code == 200 and loaded.json()["loaded"] is True
