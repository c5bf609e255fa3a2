"""The web pages in a real headless Chromium against a real ``vitserve serve`` with a trained digits ViT.

The classify page must show what ``POST /classify`` says for the same files (a photograph and a digit), the
service's own error messages (413, 415, a forbidden URL), and the models page the store's versions, the card's
metrics and confusion matrix, and live charts that move while a load runs. Each test saves a screenshot under
artefacts/browser/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.browser import Watch, browser, screenshot
from tests.e2e.e2e_server import ADMIN_TOKEN, SERVER_SETTINGS, ServerProcess
from tests.service import digits_tiny
from vitserve.model_store import ModelStore

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 300_000
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real images on disk: a photograph (scikit-image), a held-out digit (scikit-learn), and bad inputs."""
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    paths = {name: folder / name for name in ("astronaut.jpg", "digit-0.png", "noise.png", "paper.pdf")}
    Image.fromarray(data.astronaut()).resize((320, 320)).save(paths["astronaut.jpg"], quality=90)
    images, _, _ = digits_tiny.digits()
    Image.fromarray(images[0], "L").resize((64, 64), Image.Resampling.NEAREST).save(paths["digit-0.png"])
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(paths["noise.png"])  # ~480 kB: above the server's body cap
    paths["paper.pdf"].write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    assert paths["noise.png"].stat().st_size > MAX_BODY_BYTES > paths["astronaut.jpg"].stat().st_size
    return paths


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """digits:1 (trained, production, evaluated: metrics and a confusion matrix) and digits:2 (same weights)."""
    from vitserve.training.evaluate import evaluate_version

    root = tmp_path_factory.mktemp("pages")
    store = ModelStore(root / "store")
    args = (digits_tiny.trained_state(), digits_tiny.CONFIG, digits_tiny.DATA, digits_tiny.LABELS)
    lineage = {"source": "tests/service/digits_tiny.py"}
    store.publish("digits", *args, lineage=lineage, aliases=("production",), description="tiny ViT on digits")
    store.publish("digits", *args, lineage=lineage, description="the same weights, published again")
    images, labels, val = digits_tiny.digits()
    for i in np.flatnonzero(val):  # the held-out fifth, as an ImageFolder
        path = root / "digits-val" / str(labels[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], "L").save(path)
    evaluate_version(store, "digits:1", root / "digits-val", dataset_name="digits-val", batch_size=64, workers=1)
    return store


@pytest.fixture(scope="module")
def server(digits_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = {**SERVER_SETTINGS, "default_model": "digits", "max_body_bytes": MAX_BODY_BYTES}
    proc = ServerProcess(digits_store.root, tmp_path_factory.mktemp("logs") / "server.log", **settings)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as instance:
        yield instance


@pytest.fixture
def page(chromium: Any, server: ServerProcess) -> Iterator[tuple[Any, Watch]]:
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    watch = Watch(server.url)
    watch.attach(tab)
    try:
        yield tab, watch
    finally:
        context.close()
    assert watch.foreign == [], "the page asked for something off this server"
    assert watch.csp_violations() == [] and watch.page_errors == []


def api_classify(server: ServerProcess, path: Path, top_k: int = 5) -> httpx.Response:
    mime = {".jpg": "image/jpeg", ".png": "image/png", ".pdf": "application/pdf"}[path.suffix]
    upload = {"file": (path.name, path.read_bytes(), mime)}
    return httpx.post(f"{server.url}/classify", files=upload, params={"top_k": top_k}, timeout=60)


# A clipboard paste on the page and a drop on the drop zone, each carrying the given PNG bytes as a file.
PASTE_AND_DROP = """bytes => {
    const transfer = name => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
        return data;
    };
    document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer("pasted.png")}));
    const drop = document.getElementById("drop");
    drop.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer("dropped.png"), bubbles: true, cancelable: true}));
}"""


def result_card(page: Any, name: str) -> Any:
    card = page.locator("article.result", has=page.locator("figcaption", has_text=name))
    card.and_(page.locator("article.result:not([data-state=pending])")).wait_for()
    return card


def test_classify_page_shows_what_the_api_answers(page: tuple[Any, Watch], server: ServerProcess, files: dict) -> None:
    tab, _ = page
    tab.goto(server.url + "/")
    tab.locator("#model option[value='digits:1']").wait_for(state="attached")  # the picker is fed by /models
    assert tab.locator("#model option[value='digits:2']").is_disabled()  # not loaded
    for _ in range(12):  # keyboard: Tab reaches the file picker
        tab.keyboard.press("Tab")
        if tab.evaluate("document.activeElement.id") == "files":
            break
    assert tab.evaluate("document.activeElement.id") == "files"
    tab.set_input_files("#files", [str(files["astronaut.jpg"]), str(files["digit-0.png"])])
    for name in ("astronaut.jpg", "digit-0.png"):
        card = result_card(tab, name)
        assert card.get_attribute("data-state") == "done" and card.get_attribute("data-model") == "digits:1"
        shown = [(li.get_attribute("data-label"), float(li.get_attribute("data-score") or "nan"))
                 for li in card.locator("ol.labels li").all()]  # fmt: skip
        expected = api_classify(server, files[name]).json()["results"][0]["predictions"]
        assert [label for label, _ in shown] == [p["label"] for p in expected]
        assert [score for _, score in shown] == pytest.approx([p["score"] for p in expected], abs=1e-4)
        stages = card.locator("dd[data-stage]").all_inner_texts()
        assert len(stages) == 3 and all(t.endswith(("ms", " s")) for t in stages)  # decode, queue, infer
    assert result_card(tab, "digit-0.png").locator("li").first.get_attribute("data-label") == "0"
    screenshot(tab, "classify")
    tab.select_option("#top-k", "3")
    tab.select_option("#model", "digits@production")
    tab.evaluate(PASTE_AND_DROP, list(files["digit-0.png"].read_bytes()))
    for name in ("pasted.png", "dropped.png"):
        card = result_card(tab, name)
        assert card.get_attribute("data-model") == "digits:1" and card.locator("ol.labels li").count() == 3
    tab.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(tab, "classify-phone")


def test_errors_are_shown_as_the_service_words_them(
    page: tuple[Any, Watch], server: ServerProcess, files: dict
) -> None:
    tab, _ = page
    tab.goto(server.url + "/")
    tab.set_input_files("#files", [str(files["noise.png"]), str(files["paper.pdf"])])
    forbidden = "http://127.0.0.1:9/cat.jpg"  # loopback: refused by the URL policy before any connection
    tab.fill("#url", forbidden)
    tab.press("#url", "Enter")
    too_big = result_card(tab, "noise.png")
    assert (too_big.get_attribute("data-status"), too_big.get_attribute("data-code")) == ("413", "payload_too_large")
    assert f"the limit is {MAX_BODY_BYTES} bytes" in too_big.locator(".error-message").inner_text()
    unsupported = result_card(tab, "paper.pdf")
    api = api_classify(server, files["paper.pdf"])
    assert api.status_code == 415 and unsupported.get_attribute("data-status") == "415"
    assert unsupported.locator(".error-message").inner_text() == api.json()["error"]["message"]
    refused = result_card(tab, forbidden)
    api = httpx.post(f"{server.url}/classify", json={"url": forbidden}, timeout=30)
    assert api.status_code == 400 and refused.get_attribute("data-code") == api.json()["error"]["code"]
    assert refused.locator(".error-message").inner_text() == api.json()["error"]["message"]
    assert tab.locator("[role=alert]").count() == 3
    screenshot(tab, "classify-errors")


def _load(server: ServerProcess, image: bytes, stop: threading.Event) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while not stop.is_set():
            client.post("/classify", files=[("file", (f"{i}.png", image, "image/png")) for i in range(3)])


def test_models_page_lists_versions_and_live_charts_move(
    page: tuple[Any, Watch], server: ServerProcess, digits_store: ModelStore, files: dict
) -> None:
    tab, _ = page
    tab.goto(server.url + "/ui/models")
    model = tab.locator("section.model[data-model=digits]")
    rows = model.locator("tbody tr")
    rows.first.wait_for()
    assert [int(r.get_attribute("data-version") or 0) for r in rows.all()] == [
        c.version for c in digits_store.versions("digits")
    ]
    first = model.locator("tr[data-version='1']")
    assert "serving" in first.inner_text() and "@production" in first.inner_text()
    assert "top-1" in first.inner_text() and "digits-val" in first.inner_text()
    confusion = first.locator("img.confusion")
    confusion.wait_for()
    tab.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=confusion.element_handle())
    assert "cold" in model.locator("tr[data-version='2']").inner_text()  # in the store, not loaded here
    assert tab.locator("td.actions").count() == 0  # no admin action without the token

    image, stop = files["digit-0.png"].read_bytes(), threading.Event()
    loaders = [threading.Thread(target=_load, args=(server, image, stop)) for _ in range(3)]
    for thread in loaders:
        thread.start()
    try:
        throughput = tab.locator("#chart-throughput")
        tab.wait_for_function("() => Number(document.querySelector('#chart-throughput').dataset.max) > 0")
        before = throughput.locator("polyline").get_attribute("points")
        tab.wait_for_timeout(2500)  # not time.sleep: the route handler runs only while Playwright is waited on
        after = throughput.locator("polyline").get_attribute("points")
        assert before != after  # the chart moves with the load
        for chart in ("#chart-requests", "#chart-batch", "#chart-latency"):
            assert float(tab.locator(chart).get_attribute("data-max") or 0) > 0, chart
        screenshot(tab, "models")
    finally:
        stop.set()
        for thread in loaders:
            thread.join(timeout=60)


def test_admin_actions_need_the_token_and_use_the_admin_api(page: tuple[Any, Watch], server: ServerProcess) -> None:
    tab, _ = page
    tab.goto(server.url + "/ui/models")
    tab.locator("section.model[data-model=digits] tbody tr").first.wait_for()
    tab.fill("#token", "wrong-token-0123456789")
    tab.press("#token", "Enter")
    tab.get_by_role("button", name="Load digits:2").click()
    tab.wait_for_function("() => document.querySelector('#admin-status').textContent.includes('refused')")
    assert "401 unauthorized" in tab.locator("#admin-status").inner_text()
    tab.fill("#token", ADMIN_TOKEN)
    tab.press("#token", "Enter")
    tab.get_by_role("button", name="Load digits:2").click()
    tab.wait_for_function("() => document.querySelector('#admin-status').textContent.includes('done')")
    loaded = httpx.get(f"{server.url}/models/digits", timeout=10).json()["versions"][1]
    assert loaded["version"] == 2 and loaded["loaded"] and not loaded["serving"]
    tab.locator("tr[data-version='2'] .badge.loaded").wait_for()
    # A canary from the page: 10 % of production to v2, shown as the model's split, then aborted.
    tab.get_by_role("button", name="Send 10 % of digits@production to digits:2").click()
    tab.wait_for_function("() => document.querySelector('#admin-status').textContent.includes('production: canary')")
    canary = httpx.get(f"{server.url}/models/digits", timeout=10).json()["canary"]
    assert (canary["stable_version"], canary["canary_version"], canary["weight"]) == (1, 2, 10.0)
    tab.get_by_role("button", name="Abort digits@production canary v2").click()
    tab.wait_for_function("() => document.querySelector('#admin-status').textContent.includes('production: abort')")
    assert httpx.get(f"{server.url}/models/digits", timeout=10).json()["canary"] is None
    screenshot(tab, "models-admin")
