"""The web pages and their JSON, in-process on the fake engine: headers, assets, the UI switch, /stats, figures."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.service.fakes import png
from vitserve.model_store import ModelStore
from vitserve.model_store.figures import confusion_path
from vitserve.service.pages.routes import ASSETS, PAGES, STATIC_PREFIX

pytestmark = pytest.mark.anyio

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Collects what a page loads and anything a strict CSP would block (inline script, style, handlers)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self.labelled: set[str] = set()
        self.controls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.loads.append(a.get("src") or "")
            if not a.get("src"):
                self.inline.append("<script> without src")
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"] or "")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]
        if tag == "label" and a.get("for"):
            self.labelled.add(a["for"] or "")
        if tag in ("input", "select", "textarea"):
            self.controls.append(a.get("id") or "")


def _parse(html: str) -> _Refs:
    refs = _Refs()
    refs.feed(html)
    return refs


@pytest.mark.parametrize("path", list(PAGES))
async def test_pages_are_strict_same_origin_and_labelled(serve: Any, path: str) -> None:
    async with serve() as (client, _):
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        refs = _parse(page.text)
        assert refs.inline == []
        assert refs.loads and all(ref.startswith(STATIC_PREFIX) for ref in refs.loads), refs.loads
        assert set(refs.controls) <= refs.labelled, "every form control has a <label for=...>"
        for ref in refs.loads:
            asset = await client.get(ref)
            assert asset.status_code == 200, ref
            assert asset.headers["content-type"].split(";")[0] == ASSETS[ref.removeprefix(STATIC_PREFIX)].split(";")[0]


async def test_scripts_only_talk_to_this_origin(serve: Any) -> None:
    async with serve() as (client, _):
        for name in (n for n in ASSETS if n.endswith((".js", ".css", ".html"))):
            text = (await client.get(STATIC_PREFIX + name)).text
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg|example\.org/photo)", text), name
            assert ".innerHTML" not in text and "eval(" not in text, name  # text goes in as text
            imports = re.findall(r'from "([^"]+)"', text)
            assert all(i.startswith("./") and i[2:] in ASSETS for i in imports), (name, imports)


async def test_unknown_assets_are_json_404s(serve: Any) -> None:
    async with serve() as (client, _):
        for path in (STATIC_PREFIX + "nope.js", STATIC_PREFIX + "..%2F..%2Fpyproject.toml", "/ui/static/../app.py"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path


async def test_ui_setting_turns_the_pages_off(serve: Any) -> None:
    async with serve(ui=False) as (client, _):
        for path in (*PAGES, STATIC_PREFIX + "app.css"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert (await client.get("/stats")).status_code == 200  # an API, not a page


async def test_stats_count_requests_batches_and_latency(serve: Any) -> None:
    async with serve() as (client, _):
        before = (await client.get("/stats")).json()
        assert before["summary"]["requests"] == 0 and before["window_s"] == 60
        files = [("file", (f"{i}.png", png(10 * i), "image/png")) for i in range(3)]
        answers = await asyncio.gather(*(client.post("/classify", files=files[:n]) for n in (1, 2, 3)))
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert (await client.post("/classify", content=b"x", headers={"content-type": "text/plain"})).status_code == 415
        await asyncio.sleep(1.3)  # at least one sampler tick
        body = (await client.get("/stats")).json()
    summary, series = body["summary"], body["series"]
    assert summary["requests"] == 4
    assert summary["p50_ms"] > 0 and summary["p99_ms"] >= summary["p50_ms"]
    assert sum(s["requests"] for s in series) == 4 and sum(s["errors"] for s in series) == 1
    images = sum(s["images_per_s"] * s["span_s"] for s in series)
    assert images == pytest.approx(6, rel=0.01)  # 1 + 2 + 3 images through the model
    assert any(s["batch_size"] for s in series) and all(s["queue_depth"] == 0 for s in series)


async def test_confusion_figures_are_listed_and_served_from_the_store(serve: Any, store: ModelStore) -> None:
    card = store.card("tiny", 1)
    confusion_path(store, card, "digits-val").write_bytes(PNG_MAGIC + b"fake")
    (store.version_dir(card) / "notes.txt").write_text("not a figure")
    async with serve() as (client, _):
        listed = (await client.get("/models/tiny/versions/1/figures")).json()
        assert listed == {"confusion": {"digits-val": "/models/tiny/versions/1/confusion/digits-val"}}
        image = await client.get(listed["confusion"]["digits-val"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_MAGIC)
        assert (await client.get("/models/tiny/versions/2/figures")).json() == {"confusion": {}}
        for path in (
            "/models/tiny/versions/1/confusion/val",
            "/models/tiny/versions/1/confusion/..%2F..%2F..%2Fpyproject.toml",
            "/models/tiny/versions/1/confusion/..%2Fcard.json",
            "/models/nope/versions/1/figures",
            "/models/tiny/versions/9/confusion/digits-val",
        ):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] in ("model_not_found", "not_found"), path
        assert (await client.get("/models/tiny/versions/0/figures")).status_code == 422
