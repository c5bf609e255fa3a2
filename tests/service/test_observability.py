"""Request ids, the per-request log line, per-version metrics and the Grafana dashboard, in-process."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import auth, png
from vitserve.service.observability.logs import JsonFormatter, RequestIdFilter

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "vitserve.json"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Lines(logging.Handler):
    """Every record formatted as the server would (JSON, with the request id filter on the handler)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Any:
    handler = Lines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_request_ids_are_made_taken_and_echoed(serve: Any) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with serve() as (client, _):
        made = await client.post("/classify", files={"file": png(10)})
        given = await client.post("/classify", files={"file": png(10)}, headers={"X-Request-Id": "order-42.a"})
        traced = await client.get("/healthz", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        spaced = await client.get("/healthz", headers={"X-Request-Id": "no spaces allowed"})
    assert made.status_code == 200 and HEX32.match(made.headers["x-request-id"])
    assert given.headers["x-request-id"] == "order-42.a"
    assert traced.headers["x-request-id"] == trace_id
    assert HEX32.match(spaced.headers["x-request-id"])  # an unusable id is replaced, never refused


async def test_every_error_body_carries_the_request_id(serve: Any) -> None:
    async with serve() as (client, _):
        cases = [
            await client.post("/classify", params={"model": "absent"}, files={"file": png(1)}),  # domain 404
            await client.post("/classify", content=b"not an image", headers={"content-type": "image/png"}),  # 4xx
            await client.get("/no/such/route"),  # routing 404
            await client.post("/classify", params={"top_k": 0}, files={"file": png(1)}),  # validation 422
            await client.post("/classify", content=b"x" * 2048, headers={"content-length": str(10**9)}),  # 413
        ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.text
        error = response.json()["error"]
        assert set(error) == {"code", "message", "request_id"}
        assert error["request_id"] == response.headers["x-request-id"]


async def test_a_bug_is_a_500_with_the_request_id(serve: Any, factory: Any) -> None:
    async with serve() as (client, _):
        factory.engines["tiny:1"].fail_next = ZeroDivisionError("a bug")
        response = await client.post("/classify", files={"file": png(1)}, headers={"X-Request-Id": "bug-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "bug-1"
    assert response.json()["error"]["request_id"] == "bug-1"


async def test_one_access_line_per_request_and_the_id_on_every_line(serve: Any, log_lines: Any) -> None:
    async with serve() as (client, _):
        ok = await client.post("/classify", files=[("file", png(5)), ("file", png(9))], headers={"X-Request-Id": "r1"})
        load = await client.post("/admin/models/tiny:2/load", headers={**auth(), "X-Request-Id": "r2"})
        missing = await client.post("/classify?model=absent", files={"file": png(1)}, headers={"X-Request-Id": "r3"})
    assert ok.status_code == 200 and load.status_code == 200 and missing.status_code == 404
    access = {line["request_id"]: line for line in log_lines if line["logger"] == "vitserve.access"}
    line = access["r1"]
    assert (line["route"], line["status"], line["model"], line["version"], line["images"]) == (
        "/classify",
        200,
        "tiny",
        1,
        2,
    )
    assert line["bytes"] > 0 and line["duration_ms"] > 0 and line["client"]
    assert set(line["stages_ms"]) == {"decode", "queue", "infer"}
    assert (access["r3"]["status"], access["r3"]["error_code"]) == (404, "model_not_found")
    # The version registry's own lines while loading tiny:2 carry the id of the request that asked for it.
    loading = [x for x in log_lines if "tiny:2 loaded and warmed" in x["message"]]
    assert loading and all(x.get("request_id") == "r2" for x in loading)
    assert [x["request_id"] for x in log_lines if x["logger"] == "vitserve.access"].count("r1") == 1


async def test_per_version_series_and_runtime_collectors(serve: Any) -> None:
    async with serve() as (client, _):
        await client.post("/classify", files=[("file", png(5)), ("file", png(7))])
        bad = {"content": b"not an image", "headers": {"content-type": "image/png"}}
        await client.post("/classify", params={"model": "tiny:1"}, **bad)  # fails after routing: counted
        text = (await client.get("/metrics")).text
    assert 'vitserve_model_requests_total{model="tiny",status="200",version="1"} 1.0' in text
    assert 'vitserve_model_images_total{model="tiny",version="1"} 2.0' in text
    assert re.search(r'vitserve_model_errors_total\{code="\w+",model="tiny",version="1"\} 1.0', text)
    assert 'vitserve_model_request_duration_seconds_count{model="tiny",version="1"} 2.0' in text
    assert 'vitserve_model_batch_images_sum{model="tiny",version="1"}' in text
    assert 'vitserve_model_queue_images{model="tiny",version="1"}' in text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info", "python_gc_objects"):
        assert re.search(rf"^{name}", text, re.M), name


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries read."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return {m for e in exprs for m in re.findall(r"\b((?:vitserve|process|python)_[a-z0-9_]+)", e)}


async def test_every_metric_the_dashboard_queries_is_exported(serve: Any) -> None:
    wanted = dashboard_metrics()
    assert len(wanted) >= 10, wanted  # the parse found the queries: the check is not vacuous
    async with serve() as (client, _):
        await client.post("/classify", files={"file": png(3)})
        text = (await client.get("/metrics")).text
    exported = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):  # declared, with or without samples yet
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("_total",) if kind == "counter" else ("",)
        exported |= {family + suffix for suffix in suffixes} | {family}
    assert wanted <= exported, sorted(wanted - exported)
