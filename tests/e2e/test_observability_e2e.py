"""A real ``vitserve serve``: JSON log lines with the request id, the id in headers and error bodies, metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_server import ServerProcess, jpeg, metric

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log that is ours (MindSpore's C++ lines start with ``[``)."""
    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


async def test_request_ids_and_json_logs_from_a_real_server(server: ServerProcess) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        ok = await client.post(
            "/classify", files={"file": ("a.jpg", jpeg(1), "image/jpeg")}, headers={"X-Request-Id": "e2e-ok-1"}
        )
        bad = await client.post(
            "/classify",
            content=b"\xff\xd8 not really a jpeg",
            headers={"content-type": "image/jpeg", "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
        )
        text = (await client.get("/metrics")).text
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "e2e-ok-1"
    assert bad.status_code == 400 and bad.json()["error"]["request_id"] == trace_id == bad.headers["x-request-id"]
    assert metric(text, "vitserve_model_requests_total", model="tiny", version="1", status="200") >= 1
    assert metric(text, "vitserve_model_errors_total", model="tiny", version="1", code="invalid_image") >= 1
    assert metric(text, "process_resident_memory_bytes") > 0

    deadline = time.monotonic() + 10  # the log handler writes synchronously; allow for the OS buffer
    while time.monotonic() < deadline:
        access = {x["request_id"]: x for x in json_lines(server) if x.get("logger") == "vitserve.access"}
        if {"e2e-ok-1", trace_id} <= set(access):
            break
        time.sleep(0.2)
    line = access["e2e-ok-1"]
    assert (line["route"], line["status"], line["model"], line["version"], line["images"]) == (
        "/classify",
        200,
        "tiny",
        1,
        1,
    )
    assert set(line["stages_ms"]) == {"decode", "queue", "infer"} and line["client"].startswith("127.0.0.1:")
    assert line["bytes"] > 0 and line["level"] == "INFO" and line["ts"].endswith("+00:00")
    assert (access[trace_id]["status"], access[trace_id]["error_code"]) == (400, "invalid_image")
    startup = [x for x in json_lines(server) if x.get("logger", "").startswith(("vitserve.service", "uvicorn"))]
    assert startup, "the server's own start-up lines are JSON too"
