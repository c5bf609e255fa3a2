"""The chaos test's steady load: a few clients, each sending one JPEG at a time to the replicas in turn, and the
judgement of every answer (invariant 1; ``benchmarks.chaos`` states its allowances).

A request is unpinned (the model's name: whatever the replica serves, canary split included) or, where the
replica holds an explicit load, pinned to that version (``model=name:V``). Every connection is new (no
keep-alive), so that no request meets a connection its replica closed, or a killed replica left behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from vitserve.benchmarks.chaos_fleet import Replica
from vitserve.benchmarks.chaos_ledger import Ledger

CLIENTS = 3
THINK_S = 0.05  # between a client's requests: steady, not saturating (the machine is shared)
BACKOFF_S = 0.25  # after a failed request: no busy loop against a replica that is down
PINNED_SHARE = 0.3  # of requests to a replica that holds pins
REQUEST_TIMEOUT_S = 90.0  # above the replicas' own 60 s deadline: a slow answer is theirs to give
ALLOWED_WHILE_PINNED_ENDS = ("model_not_loaded", "model_not_found")


@dataclass(frozen=True)
class Sent:
    replica: int
    pinned: int | None  # the version a pinned request names
    started: float
    ended: float

    @property
    def kind(self) -> str:
        return "unpinned" if self.pinned is None else "pinned"


class Load:
    def __init__(self, name: str, replicas: list[Replica], ledger: Ledger, images: list[bytes], seed: int) -> None:
        self.name, self.replicas, self.ledger, self.images, self.seed = name, replicas, ledger, images, seed
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (unpinned|pinned, outcome) → requests
        self.latencies_ms: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
            await asyncio.gather(*(self._client(client, i, stop) for i in range(CLIENTS)))

    async def _client(self, client: httpx.AsyncClient, index: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 1000 + index)
        turn = index
        while not stop.is_set():
            replica = self.replicas[turn % len(self.replicas)]
            turn += 1
            pins = self.ledger.active_pins(replica.index)
            pinned = rng.choice(pins).version if pins and rng.random() < PINNED_SHARE else None
            params = {} if pinned is None else {"model": f"{self.name}:{pinned}"}
            image = self.images[turn % len(self.images)]
            started = time.monotonic()
            try:
                response = await client.post(
                    f"{replica.url}/classify", params=params, files={"file": ("x.jpg", image, "image/jpeg")}
                )
                status, body = response.status_code, response.text
            except httpx.HTTPError as err:
                status, body = None, f"{type(err).__name__}: {err}"
            sent = Sent(replica.index, pinned, started, time.monotonic())
            outcome = self.judge(sent, status, body)
            self.outcomes[(sent.kind, outcome)] += 1
            await asyncio.sleep(THINK_S if status == 200 else BACKOFF_S)

    def judge(self, sent: Sent, status: int | None, body: str) -> str:
        """The outcome's name; anything not allowed is also recorded as a violation of (1)."""
        if status == 200:
            self.latencies_ms.append((sent.ended - sent.started) * 1e3)
            version = json.loads(body)["model"]["version"]
            if sent.pinned is None or version == sent.pinned:
                return "200"
            self._violation(sent, status, body, f"answered by version {version}")
            return "violation: 200 from another version"
        code = error_code(body) if status is not None else body.split(":", 1)[0]
        replica = self.replicas[sent.replica]
        if replica.down_during(sent.started, sent.ended) and status in (None, 503):
            return f"allowed, replica down: {status or ''} {code}".replace("  ", " ")
        if (
            sent.pinned is not None
            and status == 404
            and code in ALLOWED_WHILE_PINNED_ENDS
            and not self.ledger.held_throughout(sent.replica, sent.pinned, sent.started, sent.ended)
        ):
            return f"allowed, unpinned meanwhile: 404 {code}"
        self._violation(sent, status, body, "failed")
        return f"violation: {status or ''} {code}".replace("  ", " ")

    def _violation(self, sent: Sent, status: int | None, body: str, what: str) -> None:
        model = self.name if sent.pinned is None else f"{self.name}:{sent.pinned}"
        self.ledger.violate(
            "1 request",
            f"{sent.kind} request (model={model}) to replica {sent.replica} {what}: {status or 'no answer'}",
            body=body[:1000],
            sent_at_s=self.ledger.at_s(sent.started),
            took_s=round(sent.ended - sent.started, 3),
        )


def error_code(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unknown"
