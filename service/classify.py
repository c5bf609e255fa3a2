"""The stages of a classify request: fetch (URL inputs) → decode → queue + infer (batched) → encode (top-k).

Every image runs its stages concurrently with the request's other images; the first failure (in input order
among those that failed) answers the whole request and cancels the rest. The request's deadline covers every
stage: passing it anywhere is ``DeadlineExceeded`` (504).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vitserve.runtime.postprocess import top_k
from vitserve.service.core.admission import Admission
from vitserve.service.core.client_budgets import ClientBudgets
from vitserve.service.core.errors import DeadlineExceeded, InvalidField, RateLimited, describe
from vitserve.service.core.metrics import Metrics
from vitserve.service.core.schemas import ClassifyResponse, ModelRef, Prediction, Result, Timings
from vitserve.service.inputs.body import ClassifyInputs, ImageInput
from vitserve.service.inputs.decode_pool import DecodePool
from vitserve.service.inputs.fetch import UrlFetcher
from vitserve.service.lifecycle.versions import LoadedVersion, VersionRegistry
from vitserve.service.observability import request_context
from vitserve.service.observability.tracing import note_stage

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
    # Decoding CPU seconds per client (``service.client_budgets``): a client in debt is refused at arrival.
    decode_budgets: ClientBudgets | None = None

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
        self,
        inputs: ClassifyInputs,
        *,
        top_k: int | None,
        model: str | None,
        timeout_s: float | None,
        arrived: float,
        key: str | None = None,
    ) -> ClassifyResponse:
        """``top_k``/``model``/``timeout_s`` from the query; body fields (in ``inputs``) take precedence. ``key``
        keeps a client on one side of a canary split."""
        k = inputs.top_k if inputs.top_k is not None else (top_k if top_k is not None else DEFAULT_TOP_K)
        if not 1 <= k <= self.max_top_k:
            raise InvalidField(f"top_k must be between 1 and {self.max_top_k}, got {k}")
        deadline = self.deadline(arrived, timeout_s)
        version = await self.registry.route(inputs.model or model, key)
        results = await self.run(version, inputs.images, deadline=deadline, arrived=arrived, client=inputs.client)
        card = version.card
        k = min(k, len(card.labels)) if card.labels else k
        return ClassifyResponse(
            model=ModelRef(name=card.name, version=card.version),
            results=[Result(predictions=_predictions(logits, k, card.labels), timings=t) for logits, t in results],
            total_ms=(time.monotonic() - arrived) * 1e3,
        )

    def deadline(self, arrived: float, timeout_s: float | None) -> float:
        """The monotonic time a request that arrived at ``arrived`` must be answered by (the client may only
        shorten the server's timeout)."""
        timeout = min(timeout_s, self.request_timeout_s) if timeout_s is not None else self.request_timeout_s
        return arrived + timeout

    async def run(
        self,
        version: LoadedVersion,
        images: list[ImageInput],
        *,
        deadline: float,
        arrived: float,
        client: str = "",
    ) -> list[tuple[np.ndarray, Timings]]:
        """Admission (``client``'s share included), then every image's stages on ``version`` (held for the
        duration): ``(C,)`` logits and timings per image, in input order, or the first failure. Every protocol's
        requests run through here, and each outcome is recorded against the version (canary statistics, the
        request's log line and traces)."""
        _note_request(version, len(images))
        self._check_decode_budget(client)
        urls = sum(image.url is not None for image in images)
        # A refusal at admission never reached the version: it does not count in the version's statistics.
        with self.admission.admit(client, len(images), urls):
            try:
                async with version.lease():
                    tasks = [asyncio.create_task(self._one(image, version, deadline, client)) for image in images]
                    results = await _all_or_first_error(tasks)
            except Exception as err:
                # The version's fault (engine failure, deadline, a full queue) counts against it; the client's not.
                if version_fault(err):
                    self.registry.stats.record(version.ref, ok=False, latency_s=time.monotonic() - arrived)
                raise
        self.registry.stats.record(version.ref, ok=True, latency_s=time.monotonic() - arrived)
        return results

    def _check_decode_budget(self, client: str) -> None:
        budgets = self.decode_budgets
        if budgets is None:
            return
        wait_s = budgets.wait_s(client)
        if wait_s > 0:
            self.metrics.rejections.labels("client_decode_cpu").inc()
            raise RateLimited(
                f"this client's images took more decoding time than its share ({budgets.rate:g} CPU seconds a "
                "second); retry after the Retry-After seconds, or send smaller images",
                retry_after_s=wait_s,
            )

    def _charge_decode(self, client: str) -> Callable[[float], None] | None:
        budgets = self.decode_budgets
        return None if budgets is None else lambda cpu_s: budgets.charge(client, cpu_s)

    async def _one(
        self, image: ImageInput, version: LoadedVersion, deadline: float, client: str
    ) -> tuple[np.ndarray, Timings]:
        fetch_ms = None
        try:
            # announced to the batcher while fetched and decoded: a batch may wait for it (up to max_delay_ms)
            with version.batcher.incoming():
                async with asyncio.timeout(deadline - time.monotonic()):
                    data = image.data
                    if image.url is not None:
                        started = time.monotonic()
                        data = await self.fetcher.fetch(image.url)
                        fetch_ms = (time.monotonic() - started) * 1e3
                        self.metrics.stage_seconds.labels("fetch").observe(fetch_ms / 1e3)
                        note_stage(request_context.current(), "fetch", fetch_ms)
                    if image.pixels is not None:  # preprocessed by the client: nothing to decode
                        x, decode_ms = image.pixels, 0.0
                    else:
                        x, decode_ms = await self.pool.prepare(
                            data or b"", version.card.data, deadline=deadline, charge=self._charge_decode(client)
                        )
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while fetching or decoding its images") from None
        record = request_context.current()
        if image.pixels is None:
            self.metrics.stage_seconds.labels("decode").observe(decode_ms / 1e3)
            note_stage(record, "decode", decode_ms)
        result = await version.batcher.submit(x, deadline=deadline)
        self.metrics.stage_seconds.labels("queue").observe(result.queue_ms / 1e3)
        self.metrics.stage_seconds.labels("infer").observe(result.infer_ms / 1e3)
        infer_end_ns = time.time_ns()  # the batch's call ended just before its result arrived here
        note_stage(record, "infer", result.infer_ms, end_ns=infer_end_ns)
        note_stage(record, "queue", result.queue_ms, end_ns=infer_end_ns - int(result.infer_ms * 1e6))
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


def version_fault(err: Exception) -> bool:
    """Whether a failed request counts against the version that ran it: 5xx-class outcomes, not bad input."""
    try:
        _, status, _ = describe(err)
    except LookupError:
        return True  # an unexpected error in the model's path
    return status >= 500


def _note_request(version: LoadedVersion, images: int) -> None:
    """Tag the current request (log line, per-version metrics, trace) with the version that serves it."""
    record = request_context.current()
    if record is not None:
        record.model, record.version, record.images = version.card.name, version.card.version, images


def _predictions(logits: np.ndarray, k: int, labels: list[str]) -> list[Prediction]:
    return [Prediction(label=p.label, index=p.index, score=p.score) for p in top_k(logits, k, labels)]
