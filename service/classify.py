"""The stages of a classify request: fetch (URL inputs) → decode → queue + infer (batched) → encode (top-k).

A model that opts in (``RESULT_CACHE_MODELS``) answers an image it has seen from its version's duplicate-image
cache, and identical images in flight share one inference (``service.core.result_cache``).

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
from vitserve.service.core.client_budgets import ClientBudgets, take_decoding
from vitserve.service.core.errors import DeadlineExceeded, InvalidField, describe
from vitserve.service.core.metrics import Metrics
from vitserve.service.core.result_cache import content_key
from vitserve.service.core.schemas import ClassifyResponse, ModelRef, Prediction, Result, Timings
from vitserve.service.inputs.body import ClassifyInputs, ImageInput
from vitserve.service.inputs.decode_pool import DecodePool
from vitserve.service.inputs.fetch import UrlFetcher
from vitserve.service.lifecycle.canary import split_routed
from vitserve.service.lifecycle.versions import LoadedVersion, VersionRegistry
from vitserve.service.observability import request_context
from vitserve.service.observability.tracing import note_stage

DEFAULT_TOP_K = 5


@dataclass
class Classifier:
    """Runs classify requests against the registry's loaded versions.

    Admission control (``service.core.admission``): at most ``max_in_flight`` images are between arrival and
    answer (fetching, decoding, queued or running), each client's fair share of them while the replica is busy,
    and a bounded number of URL inputs; beyond that a request is refused at once. Without it, a burst would pile
    up unbounded in front of the decode pool (whose executor queue has no bound) before the batcher's bounded
    queue could ever say no, holding every request body in memory.
    """

    registry: VersionRegistry
    pool: DecodePool
    fetcher: UrlFetcher
    metrics: Metrics
    admission: Admission
    max_top_k: int
    request_timeout_s: float
    # Decoding CPU seconds per client (``service.core.client_budgets``): a client in debt is refused at arrival
    # while the replica is contended.
    decode_budgets: ClientBudgets | None = None

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
        version = await self.registry.route(inputs.model or model, key, deadline=deadline)  # may wait for a load
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
        requests run through here; each is noted against the version (log line, traces), and its outcome counts in
        the canary guard's statistics only when the version caused it: a request the canary split routed (not one
        pinned to a version) that the version answered, or that failed by its fault (``version_fault``). Refusals
        before the version ran, bad input and deadlines the client shortened judge the caller, not the version."""
        _note_request(version, len(images))
        routed = split_routed(version.ref)  # read (and cleared) first, whatever happens next
        self.admission.arrive(client)
        if self.decode_budgets is not None:
            take_decoding(self.decode_budgets, client, self.metrics)
        urls = sum(image.url is not None for image in images)
        # A refusal at admission never reached the version: it does not count in the version's statistics.
        with self.admission.admit(client, len(images), urls):
            try:
                async with version.lease():
                    tasks = [asyncio.create_task(self._one(image, version, deadline, client)) for image in images]
                    results = await _all_or_first_error(tasks)
            except Exception as err:
                if routed and version_fault(err, client_deadline=deadline < arrived + self.request_timeout_s):
                    self.registry.stats.record(version.ref, ok=False, latency_s=time.monotonic() - arrived)
                raise
        if routed:
            self.registry.stats.record(version.ref, ok=True, latency_s=time.monotonic() - arrived)
        return results

    def _charge_decode(self, client: str) -> Callable[[float], None] | None:
        budgets = self.decode_budgets
        return None if budgets is None else lambda cpu_s: budgets.charge(client, cpu_s)

    async def _one(
        self, image: ImageInput, version: LoadedVersion, deadline: float, client: str
    ) -> tuple[np.ndarray, Timings]:
        cache = version.results
        if cache is None:
            return await self._infer(image, version, deadline, client)
        # The duplicate-image cache (service/core/result_cache.py): a URL input is fetched first, then keyed.
        data, fetch_ms = await self._fetch(image, version, deadline)
        key = await content_key(data, image.pixels)
        fetched = ImageInput(data=data) if image.url is not None else image

        async def infer() -> tuple[np.ndarray, Timings]:
            row, timings = await self._infer(fetched, version, deadline, client)
            return row.copy(), timings  # a row of its own: the cache keeps no batch's whole output alive

        try:
            (row, timings), outcome = await cache.once(key, infer, wait_s=deadline - time.monotonic())
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while an identical image was inferred") from None
        self.metrics.result_cache.labels(version.card.name, str(version.card.version), outcome).inc()
        if outcome == "hit":  # no model call: nothing queued or inferred for this image
            timings = Timings(decode_ms=0.0, queue_ms=0.0, infer_ms=0.0, batch_size=0)
        return row, timings.model_copy(update={"fetch_ms": fetch_ms, "cache": None if outcome == "miss" else outcome})

    async def _fetch(
        self, image: ImageInput, version: LoadedVersion, deadline: float
    ) -> tuple[bytes | None, float | None]:
        """A URL input's bytes and the milliseconds its fetch took (announced to the batcher meanwhile); any other
        input's bytes as they are, and ``None``."""
        if image.url is None:
            return image.data, None
        try:
            with version.batcher.incoming():
                async with asyncio.timeout(deadline - time.monotonic()):
                    started = time.monotonic()
                    data = await self.fetcher.fetch(image.url)
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while fetching its images") from None
        fetch_ms = (time.monotonic() - started) * 1e3
        self.metrics.stage_seconds.labels("fetch").observe(fetch_ms / 1e3)
        note_stage(request_context.current(), "fetch", fetch_ms)
        return data, fetch_ms

    async def _infer(
        self, image: ImageInput, version: LoadedVersion, deadline: float, client: str
    ) -> tuple[np.ndarray, Timings]:
        data, fetch_ms = await self._fetch(image, version, deadline)
        try:
            # announced to the batcher while decoded: a batch may wait for it (up to max_delay_ms)
            with version.batcher.incoming():
                async with asyncio.timeout(deadline - time.monotonic()):
                    if image.pixels is not None:  # preprocessed by the client: nothing to decode
                        x, decode_ms = image.pixels, 0.0
                    else:
                        x, decode_ms = await self.pool.prepare(
                            data or b"", version.card.data, deadline=deadline, charge=self._charge_decode(client)
                        )
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded("the request's deadline passed while decoding its images") from None
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


def version_fault(err: Exception, *, client_deadline: bool = False) -> bool:
    """Whether a failed request counts against the version that ran it: 5xx-class outcomes (an engine failure,
    the server's own deadline passed, the version's queue full), not bad input, and not a deadline the client set
    shorter than the server's (any version misses a deadline short enough: it measures the client)."""
    try:
        _, status, _ = describe(err)
    except LookupError:
        return True  # an unexpected error in the model's path
    if client_deadline and isinstance(err, DeadlineExceeded):
        return False
    return status >= 500


def _note_request(version: LoadedVersion, images: int) -> None:
    """Tag the current request (log line, per-version metrics, trace) with the version that serves it."""
    record = request_context.current()
    if record is not None:
        record.model, record.version, record.images = version.card.name, version.card.version, images


def _predictions(logits: np.ndarray, k: int, labels: list[str]) -> list[Prediction]:
    return [Prediction(label=p.label, index=p.index, score=p.score) for p in top_k(logits, k, labels)]
