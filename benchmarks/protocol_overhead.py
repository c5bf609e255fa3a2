"""What the Open Inference Protocol's REST path costs over ``/classify``: same server, same image, same run.

    python -m vitserve.benchmarks.protocol_overhead --url http://127.0.0.1:8000 --image photo.jpg

Rounds alternate between the routes (so that drift in machine load hits both alike) at each concurrency:
``/classify`` with a multipart file, ``/v2/.../infer`` with the image base64 in JSON, and ``/v2/.../infer``
with the binary tensor data extension, all asking for the top 5. Prints per-request latency (mean, p50, p90)
and the v2 paths' overhead against ``/classify`` as a percentage of its mean.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

Request = Callable[[httpx.AsyncClient], Any]


def requests_for(model: str, image: bytes, k: int) -> dict[str, Request]:
    """One request builder per route, each sending ``image`` and asking for ``k`` classes."""
    infer = f"/v2/models/{model}/infer"
    outputs = [{"name": "probabilities", "parameters": {"classification": k}}]
    encoded = base64.b64encode(image).decode()
    as_json: dict[str, Any] = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [encoded]}],
        "outputs": outputs,
    }
    raw = struct.pack("<I", len(image)) + image
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": outputs,
        }
    ).encode()
    binary_headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return {
        "classify": lambda c: c.post("/classify", files={"file": ("x.jpg", image, "image/jpeg")}, params={"top_k": k}),
        "v2 json": lambda c: c.post(infer, json=as_json),
        "v2 binary": lambda c: c.post(infer, content=header + raw, headers=binary_headers),
    }


async def _round(client: httpx.AsyncClient, send: Request, clients: int, per_client: int) -> list[float]:
    """``clients`` concurrent loops of ``per_client`` requests each; every latency in ms."""

    async def loop() -> list[float]:
        latencies = []
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                response = await send(client)
            except httpx.TransportError as err:  # a kept-alive connection the server just closed: not a sample
                log.warning("dropped one sample: %s", err)
                continue
            latencies.append((time.perf_counter() - started) * 1e3)
            response.raise_for_status()
        return latencies

    return [ms for part in await asyncio.gather(*(loop() for _ in range(clients))) for ms in part]


async def measure(
    url: str, requests: dict[str, Request], *, clients: int, rounds: int, per_client: int
) -> dict[str, list[float]]:
    """Latencies per route at one concurrency, rounds interleaved; one warm-up round per route first."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for send in requests.values():
            await _round(client, send, clients, 2)
        seen: dict[str, list[float]] = {name: [] for name in requests}
        for _ in range(rounds):
            for name, send in requests.items():
                seen[name] += await _round(client, send, clients, per_client)
    return seen


def summary(seen: dict[str, list[float]], baseline: str = "classify") -> list[dict[str, Any]]:
    base = statistics.fmean(seen[baseline])
    rows = []
    for name, values in seen.items():
        q = statistics.quantiles(values, n=10)
        mean = statistics.fmean(values)
        overhead = 100 * (mean - base) / base
        rows.append(
            {"route": name, "n": len(values), "mean_ms": mean, "p50_ms": q[4], "p90_ms": q[8], "vs_pct": overhead}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="requests per route per concurrency level")
    args = parser.parse_args(argv)
    requests = requests_for(args.model, args.image.read_bytes(), 5)
    for clients in args.clients:
        per_client = max(1, args.requests // (clients * args.rounds))
        seen = asyncio.run(measure(args.url, requests, clients=clients, rounds=args.rounds, per_client=per_client))
        print(f"{clients} client(s):")
        for row in summary(seen):
            print(
                f"  {row['route']:<10} n={row['n']:<4} mean {row['mean_ms']:7.2f} ms  p50 {row['p50_ms']:7.2f} ms  "
                f"p90 {row['p90_ms']:7.2f} ms  vs classify {row['vs_pct']:+6.1f} %"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
