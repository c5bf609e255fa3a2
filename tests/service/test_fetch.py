"""URL inputs: the policy's connection half, against a real HTTP server on 127.0.0.1 (and nothing else).

Every client here goes through ``LoopbackOnly``, which fails the test instead of connecting anywhere but
127.0.0.1/::1; refused destinations are proven by the absence of any connection attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from tests.service.fakes import expected_class, png
from vitserve.service.core.errors import InvalidInput, UnsupportedMediaType, UrlFetchFailed, UrlForbidden
from vitserve.service.inputs.fetch import UrlFetcher, UrlPolicy
from vitserve.vit.image_errors import ImageTooLarge

pytestmark = pytest.mark.anyio

IMAGE = png(77)


class Handler(BaseHTTPRequestHandler):
    hosts: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        path = self.path
        if path == "/img":
            self._send(200, IMAGE, "image/png")
        elif path == "/html-claiming-jpeg":
            self._send(200, b"<!doctype html><p>not an image</p>", "image/jpeg")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect(f"/hop/{left - 1}" if left else "/img")
        elif path == "/to-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/to-private-name":
            self._redirect("http://internal.test/secret")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/big":
            self._send(200, IMAGE + b"\x00" * 100_000, "image/png")
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # no Content-Length: the client must count
            self.wfile.write(IMAGE + b"\x00" * 100_000)
            self.close_connection = True
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, IMAGE, "image/png")
        elif path == "/gzip":
            self._send(200, IMAGE, "image/png", {"Content-Encoding": "gzip"})
        else:
            self._send(404, b"nope", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up (timeouts, caps) break the pipe: expected here


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class LoopbackOnly(httpx.AsyncBaseTransport):
    """Records every request; connects only to loopback, and fails the test for anything else."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {request.url.host}")
        return await self.inner.handle_async_request(request)


class Resolver:
    """A fake DNS: fixed answers per name, counting lookups; a name may answer differently on later lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        seq = self.answers.get(host)
        if seq is None:
            raise OSError(f"no such host {host}")
        return seq[min(len(self.calls) - 1, len(seq) - 1)]


def fetcher(resolver: Resolver | None = None, **policy: Any) -> tuple[UrlFetcher, LoopbackOnly]:
    transport = LoopbackOnly()
    values: dict[str, Any] = {"max_bytes": 50_000, "allow_loopback": True, "timeout_s": 5.0}
    values.update(policy)
    return UrlFetcher(UrlPolicy(**values), resolver=resolver or Resolver({}), transport=transport), transport


async def test_fetches_an_image_from_the_local_server(server: str) -> None:
    f, transport = fetcher()
    assert await f.fetch(f"http://{server}/img") == IMAGE
    assert expected_class(IMAGE) >= 0 and len(transport.requests) == 1


async def test_loopback_is_refused_without_the_switch(server: str) -> None:
    f, transport = fetcher(Resolver({"localhost": [["127.0.0.1", "::1"]]}), allow_loopback=False)
    for url in (f"http://{server}/img", "http://localhost/img", "http://2130706433/", "http://0x7f.1/"):
        with pytest.raises(UrlForbidden):
            await f.fetch(url)
    assert transport.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://10.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://0/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://private.test/",
        "http://mixed.test/",
        "ftp://example.test/x.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:secret@public.test/x.png",
    ],
)
async def test_refused_destinations_make_no_connection(url: str) -> None:
    resolver = Resolver(
        {"private.test": [["192.168.0.10"]], "mixed.test": [["8.8.8.8", "10.0.0.5"]], "public.test": [["8.8.8.8"]]}
    )
    f, transport = fetcher(resolver, allow_loopback=False)
    with pytest.raises((UrlForbidden, InvalidInput)):
        await f.fetch(url)
    assert transport.requests == []


async def test_allowlist(server: str) -> None:
    resolver = Resolver({"images.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    f, transport = fetcher(resolver, allow_hosts=("images.test",))
    port = server.split(":")[1]
    assert await f.fetch(f"http://images.test:{port}/img") == IMAGE
    with pytest.raises(UrlForbidden, match="not in the allowed hosts"):
        await f.fetch(f"http://other.test:{port}/img")
    assert len(transport.requests) == 1


async def test_connection_is_pinned_to_the_checked_address(server: str) -> None:
    # A rebinding DNS: the first answer passes the check, a later one would point at a private address.
    resolver = Resolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    f, transport = fetcher(resolver)
    port = server.split(":")[1]
    Handler.hosts.clear()
    assert await f.fetch(f"http://rebind.test:{port}/img") == IMAGE
    assert resolver.calls == ["rebind.test"]  # resolved once, for the check; the connection reuses it
    assert [r.url.host for r in transport.requests] == ["127.0.0.1"]
    assert Handler.hosts == [f"rebind.test:{port}"]  # the server still sees the name


async def test_redirects_are_followed_and_each_is_checked(server: str) -> None:
    f, transport = fetcher(max_redirects=3)
    assert await f.fetch(f"http://{server}/hop/2") == IMAGE  # 3 redirects: allowed
    with pytest.raises(UrlFetchFailed, match="more than 3 redirects"):
        await f.fetch(f"http://{server}/hop/3")
    before = len(transport.requests)
    for path in ("/to-metadata", "/to-private-name", "/to-file"):
        with pytest.raises(UrlForbidden):
            await fetcher(Resolver({"internal.test": [["10.1.1.1"]]}))[0].fetch(f"http://{server}{path}")
    assert len(transport.requests) == before


async def test_byte_cap_declared_and_streamed(server: str) -> None:
    f, _ = fetcher(max_bytes=50_000)
    with pytest.raises(ImageTooLarge):
        await f.fetch(f"http://{server}/big")
    with pytest.raises(ImageTooLarge):
        await f.fetch(f"http://{server}/big-chunked")


async def test_content_is_sniffed_not_trusted(server: str) -> None:
    f, _ = fetcher()
    with pytest.raises(UnsupportedMediaType):
        await f.fetch(f"http://{server}/html-claiming-jpeg")
    with pytest.raises(UrlFetchFailed, match="compressed"):
        await f.fetch(f"http://{server}/gzip")
    with pytest.raises(UrlFetchFailed, match="could not fetch") as missing:
        await f.fetch(f"http://{server}/missing")
    assert "404" not in str(missing.value)  # the upstream's status is not echoed: no port-scan oracle


async def test_total_timeout(server: str) -> None:
    f, _ = fetcher(timeout_s=0.3, connect_timeout_s=0.2)
    with pytest.raises(UrlFetchFailed, match=r"longer than 0\.3 s|timed out"):
        await f.fetch(f"http://{server}/slow")  # the server answers after 1.5 s


async def test_unresolvable_and_refused_connection() -> None:
    f, _ = fetcher(Resolver({"dead.test": [["127.0.0.1"]]}), connect_timeout_s=1)
    with pytest.raises(UrlFetchFailed, match="cannot resolve"):
        await f.fetch("http://nowhere.test/x")
    with pytest.raises(UrlFetchFailed):
        await f.fetch("http://dead.test:9/x")  # discard port: nothing listens


async def test_url_input_through_the_api(serve: Any, server: str) -> None:
    transport = LoopbackOnly()
    kwargs = {"url_transport": transport}
    async with serve(app_kwargs=kwargs, url_allow_loopback=True) as (client, _):
        ok = await client.post("/classify", json={"url": f"http://{server}/img", "top_k": 1})
        html = await client.post("/classify", json={"images": [{"url": f"http://{server}/html-claiming-jpeg"}]})
    async with serve(app_kwargs={"url_transport": transport}) as (client, _):
        blocked = await client.post("/classify", json={"url": f"http://{server}/img"})
        metadata = await client.post("/classify", json={"url": "http://169.254.169.254/latest/meta-data/"})
        still = await client.post("/classify", files={"file": IMAGE})
    assert ok.status_code == 200, ok.text
    result = ok.json()["results"][0]
    assert result["predictions"][0]["index"] == expected_class(IMAGE) and result["timings"]["fetch_ms"] > 0
    assert html.status_code == 415
    for r in (blocked, metadata):
        assert r.status_code == 400 and r.json()["error"]["code"] == "url_forbidden"
    assert still.status_code == 200
    assert len(transport.requests) == 2  # only the two loopback-allowed fetches connected
