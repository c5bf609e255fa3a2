"""What callers pass in cannot steer the client: a model name is one path segment or refused, and a ``str`` is
only ever a URL, never read as a file; local files are passed explicitly (``Path``, file objects). Both faces."""

from __future__ import annotations

import base64
import builtins
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.scenario import MODEL, OK, Face, Server

PNG = b"\x89PNG\r\n\x1a\n fake image"


@pytest.mark.parametrize(
    "name", ["../admin/x", "..", "a/b", "a?b", "a#b", "a%2fb", ".hidden", "Tiny", "tiny:1", "tiny@prod", "", "x" * 65]
)
def test_model_names_that_could_change_the_route_are_refused(face: Face, name: str) -> None:
    server = Server()
    with pytest.raises(ValueError, match=r"invalid model name.*a-z 0-9"):
        face(server, lambda client: client.model(name))
    assert server.seen == []  # nothing sent


@pytest.mark.parametrize("base_url", ["http://test", "http://test/", "http://test/prefix"])
def test_a_model_name_is_one_path_segment(face: Face, base_url: str) -> None:
    server = Server(httpx.Response(200, json=MODEL))
    info = face(server, lambda client: client.model("vit-b.16_v2"), base_url=base_url)
    prefix = "/prefix" if "prefix" in base_url else ""
    assert info.name == "tiny" and server.seen[0].url.raw_path == f"{prefix}/models/vit-b.16_v2".encode()


@pytest.fixture
def no_file_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A real ./cat.jpg (the client used to read and send it), then every attempt to open a file refused and
    recorded."""
    (tmp_path / "cat.jpg").write_bytes(PNG)
    monkeypatch.chdir(tmp_path)
    opened: list[Any] = []

    def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(file)
        raise PermissionError(f"the test forbids opening {file!r}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    return opened


@pytest.mark.parametrize("text", ["cat.jpg", "/etc/passwd", "file:///etc/passwd", "ftp://example.org/cat.jpg"])
def test_a_str_that_is_not_a_url_is_refused_without_touching_files(
    face: Face, text: str, tmp_path: Path, no_file_opened: list[Any]
) -> None:
    server = Server()
    with pytest.raises(ValueError, match=r"not an http\(s\) URL.*pass a local file as Path\("):
        face(server, lambda client: client.classify(text))
    with pytest.raises(ValueError, match="not an http"):  # checked before any of the list's files is read
        face(server, lambda client: client.classify([tmp_path / "cat.jpg", text]))
    assert no_file_opened == [] and server.seen == []


def test_what_is_no_image_is_refused(face: Face) -> None:
    server = Server()
    with pytest.raises(TypeError, match="unsupported image int"):
        face(server, lambda client: client.classify([b"x", 42]))
    with pytest.raises(TypeError, match="binary mode"):
        face(server, lambda client: client.classify(io.StringIO("text")))
    assert server.seen == []


@pytest.mark.parametrize("kind", ["path", "file object", "bytes", "bytearray"])
def test_files_and_bytes_travel_as_multipart(face: Face, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    image = {"path": path, "file object": io.BytesIO(PNG), "bytes": PNG, "bytearray": bytearray(PNG)}[kind]
    server = Server(httpx.Response(200, json=OK))
    face(server, lambda client: client.classify(image, top_k=3, model="tiny@production"))
    sent = server.seen[0]
    assert sent.url.path == "/classify" and dict(sent.url.params) == {"top_k": "3", "model": "tiny@production"}
    assert sent.headers["content-type"].startswith("multipart/form-data") and PNG in sent.read()


def test_urls_go_as_json_beside_files_in_base64(face: Face, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    server = Server(httpx.Response(200, json=OK))
    face(server, lambda client: client.classify([path, "HTTPS://example.org/dog.jpg"]))
    assert json.loads(server.seen[0].read()) == {
        "images": [{"image_base64": base64.b64encode(PNG).decode()}, {"url": "HTTPS://example.org/dog.jpg"}]
    }


def test_an_unreadable_file_is_an_os_error_naming_it(face: Face, tmp_path: Path) -> None:
    server = Server()
    with pytest.raises(FileNotFoundError) as err:
        face(server, lambda client: client.classify(tmp_path / "missing.jpg"))
    assert Path(err.value.filename) == tmp_path / "missing.jpg" and server.seen == []


def test_a_misspelt_option_is_a_type_error(face: Face) -> None:
    server = Server()
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['topk'\] for classify\(\)"):
        face(server, lambda client: client.classify(b"x", topk=3))
    with pytest.raises(
        TypeError, match=r"unexpected keyword arguments \['timeout'\] for Client\(\) and AsyncClient\(\)"
    ):
        face(server, lambda client: None, timeout=5)
    assert server.seen == []
