"""The stages of a classify request: fetch (URL inputs) → decode → queue + infer (batched) → encode (top-k).

Every image runs its stages concurrently with the request's other images; the first failure (in input order
among those that failed) answers the whole request and cancels the rest. The request's deadline covers every
stage: passing it anywhere is ``DeadlineExceeded`` (504).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from vitserve.runtime.postprocess import top_k
from vitserve.service.admission import Admission
from vitserve.service.http.errors import DeadlineExceeded, InvalidField
from vitserve.service.http.metrics import Metrics
from vitserve.service.http.schemas import ClassifyResponse, ModelRef, Prediction, Result, Timings
from vitserve.service.inputs.body import ClassifyInputs, ImageInput
from vitserve.service.inputs.decode_pool import DecodePool
from vitserve.service.inputs.fetch import UrlFetcher
from vitserve.service.lifecycle.versions import LoadedVersion, VersionRegistry

DEFAULT_TOP_K = 5


@dataclass
class Classifier:
    """Runs classify requests against the registry's loaded versions.

    Admission control (``service.admission``): at most ``max_in_flight`` images are between arrival and
    answer (fetching, decoding, queued or running), at most ``client_limit`` of them one client's and
    ``max_url_fetches`` of them URL inputs; beyond that a request is ``Overloaded`` at once. Without it, a burst
    would pile up unbounded in front of the decode pool (whose executor queue has no bound) before the
    batcher's bounded queue could ever say no, holding every request body in memory.
    """

    registry: VersionRegistry
    pool: DecodePool
    fetcher: UrlFetcher
    metrics: Metrics
    max_top_k: int
    request_timeout_s: float
    max_in_flight: int
    client_limit: int | None = None  # images one client may have in progress; None → max_in_flight
    max_url_fetches: int | None = None  # URL inputs being fetched at once; None → max_in_flight

    def __post_init__(self) -> None:
        self.admission = Admission(
            self.max_in_flight,
            self.client_limit or self.max_in_flight,
            self.max_url_fetches or self.max_in_flight,
            self.metrics,
        )

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    async def classify(
        self, inputs: ClassifyInputs, *, top_k: int | None, model: str | None, timeout_s: float | None, arrived: float
    ) -> ClassifyResponse:
        """``top_k``/``model``/``timeout_s`` from the query; body fields (in ``inputs``) take precedence."""
        k = inputs.top_k if inputs.top_k is not None else (top_k if top_k is not None else DEFAULT_TOP_K)
        if not 1 <= k <= self.max_top_k:
            raise InvalidField(f"top_k must be between 1 and {self.max_top_k}, got {k}")
        timeout = min(timeout_s, self.request_timeout_s) if timeout_s is not None else self.request_timeout_s
        deadline = arrived + timeout
        version = await self.registry.route(inputs.model or model)
        urls = sum(image.url is not None for image in inputs.images)
        with self.admission.admit(inputs.client, len(inputs.images), urls):
            async with version.lease():
                tasks = [asyncio.create_task(self._one(image, version, deadline)) for image in inputs.images]
                results = await _all_or_first_error(tasks)
        card = version.card
        k = min(k, len(card.labels)) if card.labels else k
        return ClassifyResponse(
            model=ModelRef(name=card.name, version=card.version),
            results=[Result(predictions=_predictions(logits, k, card.labels), timings=t) for logits, t in results],
            total_ms=(time.monotonic() - arrived) * 1e3,
        )

    async def _one(self, image: ImageInput, version: LoadedVersion, deadline: float) -> tuple[np.ndarray, Timings]:
        fetch_ms = None
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                data = image.data
                if image.url is not None:
                    started = time.monotonic()
                    data = await self.fetcher.fetch(image.url)
                    fetch_ms = (time.monotonic() - started) * 1e3
                    self.metrics.stage_seconds.labels("fetch").observe(fetch_ms / 1e3)
                x, decode_ms = await self.pool.prepare(data or b"", version.card.data, deadline=deadline)
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while fetching or decoding its images") from None
        self.metrics.stage_seconds.labels("decode").observe(decode_ms / 1e3)
        result = await version.batcher.submit(x, deadline=deadline)
        self.metrics.stage_seconds.labels("queue").observe(result.queue_ms / 1e3)
        self.metrics.stage_seconds.labels("infer").observe(result.infer_ms / 1e3)
        timings = Timings(
            fetch_ms=fetch_ms,
            decode_ms=round(decode_ms, 3),
            queue_ms=round(result.queue_ms, 3),
            infer_ms=round(result.infer_ms, 3),
            batch_size=result.batch_size,
        )
        return result.row, timings


async def _all_or_first_error(
    tasks: list[asyncio.Task[tuple[np.ndarray, Timings]]],
) -> list[tuple[np.ndarray, Timings]]:
    """Every task's result in order, or the first failed task's exception after cancelling the others."""
    try:
        pending: set[asyncio.Task[tuple[np.ndarray, Timings]]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            if failed:
                error = failed[0].exception()
                assert error is not None
                raise error
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()


def _predictions(logits: np.ndarray, k: int, labels: list[str]) -> list[Prediction]:
    return [Prediction(label=p.label, index=p.index, score=p.score) for p in top_k(logits, k, labels)]
