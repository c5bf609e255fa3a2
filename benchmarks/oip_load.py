"""A closed-loop load generator over the Open Inference Protocol: Triton's own client library (``tritonclient``).

Runs in an environment with ``tritonclient[http]`` (``.venv-triton``, made by ``scripts/install_triton_peer.sh``),
where vitserve is not installed; it imports nothing of vitserve, so that it drives our server and Triton alike::

    .venv-triton/bin/python -I benchmarks/oip_load.py load --url 127.0.0.1:8000 --model NAME --jpegs DIR \\
        --concurrency 16 --seconds 20 --warmup-s 5 --top-k 5
    .venv-triton/bin/python -I benchmarks/oip_load.py check --url 127.0.0.1:8000 --model NAME --jpegs DIR

Every request is the same for every server: ``POST /v2/models/NAME/infer`` with one JPEG file of ``DIR`` (sorted
by name, each client starting at its own) as input ``image``, BYTES, shape ``[1, 1]``, in binary tensor data, and
output ``probabilities`` asked with ``class_count`` = ``--top-k`` (Triton's classification extension: the top k
as ``"score:index"`` strings). ``load``: ``--concurrency`` clients (``tritonclient.http.aio``, one event loop, a
connection each), each sending its next request as soon as its last is answered, for ``--warmup-s`` and then
``--seconds``; images/s is the answers that arrived within the ``--seconds`` window ÷ its length, and the
latencies are theirs. ``check``: each JPEG once, the full ``probabilities`` row. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

INPUT = "image"
OUTPUT = "probabilities"
REQUEST_TIMEOUT_S = 300.0  # a request may queue this long (64 clients on ViT-B/16), as in the HTTP benchmark


def image_inputs(jpegs: Sequence[bytes]) -> list[aioclient.InferInput]:
    """One ``image`` BYTES ``[1, 1]`` input per JPEG, encoded once and shared by every request that sends it."""
    inputs = []
    for jpeg in jpegs:
        tensor = aioclient.InferInput(INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[jpeg]], dtype=np.object_), binary_data=True)
        inputs.append(tensor)
    return inputs


def percentile_ms(samples_s: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(samples_s) * 1e3, q)) if samples_s else None


async def load(args: argparse.Namespace, jpegs: Sequence[bytes]) -> dict[str, Any]:
    inputs = image_inputs(jpegs)
    outputs = [aioclient.InferRequestedOutput(OUTPUT, binary_data=True, class_count=args.top_k)]
    answered: list[tuple[float, float]] = []  # (sent, answered) per answer
    failures: dict[str, int] = {}
    sent = 0
    started = time.perf_counter()
    window = (started + args.warmup_s, started + args.warmup_s + args.seconds)

    async def client_loop(client: aioclient.InferenceServerClient, first: int) -> None:
        nonlocal sent
        index = first
        while (t0 := time.perf_counter()) < window[1]:
            sent += 1
            try:
                await client.infer(args.model, [inputs[index % len(inputs)]], outputs=outputs)
                answered.append((t0, time.perf_counter()))
            except (TimeoutError, InferenceServerException, OSError, aiohttp.ClientError) as err:
                key = str(err.status()) if isinstance(err, InferenceServerException) else type(err).__name__
                failures[key] = failures.get(key, 0) + 1
            index += args.concurrency

    clients = [
        aioclient.InferenceServerClient(args.url, conn_limit=1, conn_timeout=REQUEST_TIMEOUT_S)
        for _ in range(args.concurrency)
    ]
    try:
        await asyncio.gather(*(client_loop(client, i) for i, client in enumerate(clients)))
    finally:
        for client in clients:
            await client.close()
    latencies = [end - begin for begin, end in answered if window[0] <= end <= window[1]]
    return {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "requests": sent,
        "answered": len(answered),
        "ok": len(latencies),  # answers within the window
        "failures": failures,
        "images_per_s": len(latencies) / args.seconds,
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "p99_ms": percentile_ms(latencies, 99),
    }


async def check(args: argparse.Namespace, jpegs: Sequence[bytes]) -> dict[str, Any]:
    """Each JPEG once: the full probabilities row, and the server's metadata."""
    async with aioclient.InferenceServerClient(args.url, conn_timeout=REQUEST_TIMEOUT_S) as client:
        rows = []
        for tensor in image_inputs(jpegs):
            result = await client.infer(args.model, [tensor], outputs=[aioclient.InferRequestedOutput(OUTPUT)])
            rows.append([float(p) for p in result.as_numpy(OUTPUT).reshape(-1)])
        server = await client.get_server_metadata()
    return {"probabilities": rows, "server": {"name": server.get("name"), "version": server.get("version")}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oip_load.py", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["load", "check"])
    parser.add_argument("--url", required=True, help="host:port of the server's HTTP /v2 endpoint")
    parser.add_argument("--model", required=True)
    parser.add_argument("--jpegs", type=Path, required=True, help="a folder of .jpg files")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="closed-loop load before the window")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    jpegs = [path.read_bytes() for path in sorted(args.jpegs.glob("*.jpg"))]
    if not jpegs:
        parser.error(f"no .jpg file in {args.jpegs}")
    run = load if args.mode == "load" else check
    print(json.dumps(asyncio.run(run(args, jpegs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
