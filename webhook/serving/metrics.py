"""Prometheus metrics of the webhook, valid across gunicorn workers.

Under gunicorn each worker is its own process; with PROMETHEUS_MULTIPROC_DIR set (the
`serve` command sets it) prometheus_client writes values to files there and `/metrics`
aggregates them, so a scrape sees every worker, not just the one that answered. What each
review adds is tallied in plain numbers first and written to those files in batches
(`AdmissionTally`).
"""

from __future__ import annotations

import atexit
import bisect
import os
import platform
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from webhook.model import build
from webhook.model.workloads import WORKLOADS
from webhook.serving.server import MULTIPROC_ENV

# No `_created` series: one more series per labelled child, of no use on a dashboard.
prometheus_client.disable_created_metrics()

# Every label value comes from a fixed set, never from the request: one review with kind
# "\ud800" would break every scrape (it cannot be encoded), and each new kind would add a
# series to the metrics files for good.
KINDS = frozenset((*WORKLOADS, "ImageStream"))
OTHER_KIND = "other"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# How long a review's counts may wait in a worker's tally before they reach the metrics
# files (a scrape answered by the same worker always sees them at once).
FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    images_resolved: Counter
    warnings: Counter
    index_streams: Gauge
    build_info: Gauge
    tally: AdmissionTally = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tally", AdmissionTally(self))

    def exposition(self) -> tuple[bytes, str]:
        self.tally.flush()
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class AdmissionTally:
    """What the reviews add to the metrics, kept in plain numbers and written in batches.

    In multiprocess mode each prometheus_client write is a locked write to an mmap'd file,
    and a review made four (its kind and result, a latency bucket and the latency sum, the
    images resolved): 10-12 µs of a worker's CPU a review, half of what resolving it costs.
    `record` is arithmetic on ints (~1 µs); `flush` adds to the metrics what was recorded
    since the last flush. It runs FLUSH_SECONDS after the first review it has not written
    (a timer thread: a greenlet in the gevent worker), before every scrape this worker
    answers, and at exit; a scrape that another worker answers may lag by FLUSH_SECONDS,
    nothing beside Prometheus' scrape interval.

    Nothing is locked on the request path: the gevent worker's greenlets do not switch
    inside `record` (it does no I/O), and `flush` reads only running totals and remembers
    what it wrote, so a record that runs while it flushes is written by the next flush.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._bounds = _upper_bounds(metrics.latency)
        self._requests: dict[tuple[str, str], int] = {}
        self._buckets = [0] * len(self._bounds)
        self._latency_sum = 0.0
        self._images = 0
        self._warnings = 0
        # What the metrics were given so far, of each running total above.
        self._written_requests: dict[tuple[str, str], int] = {}
        self._written_buckets = [0] * len(self._bounds)
        self._written_sum = 0.0
        self._written_images = 0
        self._written_warnings = 0
        self._flushing = threading.Lock()
        self._timer: threading.Thread | None = None

    def record(
        self,
        kind: str,
        result: str,
        seconds: float | None = None,
        images: int = 0,
        warnings: int = 0,
    ) -> None:
        """One review: its labels, its latency (None: not timed), what it resolved and warned."""
        key = (kind, result)
        self._requests[key] = self._requests.get(key, 0) + 1
        if seconds is not None:
            self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
            self._latency_sum += seconds
        self._images += images
        self._warnings += warnings
        if self._timer is None:
            self._start_timer()

    def flush(self) -> None:
        """Add to the metrics what was recorded since the last flush."""
        with self._flushing:
            m = self._metrics
            for key, total in list(self._requests.items()):
                if added := total - self._written_requests.get(key, 0):
                    m.requests.labels(kind=key[0], result=key[1]).inc(added)
                    self._written_requests[key] = total
            _add_observations(m.latency, self._buckets, self._written_buckets)
            latency_sum = self._latency_sum
            if latency_sum != self._written_sum:
                _histogram_sum(m.latency).inc(latency_sum - self._written_sum)
                self._written_sum = latency_sum
            images, warnings = self._images, self._warnings
            if images != self._written_images:
                m.images_resolved.inc(images - self._written_images)
                self._written_images = images
            if warnings != self._written_warnings:
                m.warnings.inc(warnings - self._written_warnings)
                self._written_warnings = warnings

    def _start_timer(self) -> None:
        self._timer = threading.Thread(
            target=_flush_every,
            args=(weakref.ref(self), FLUSH_SECONDS),
            name="metrics-flush",
            daemon=True,
        )
        self._timer.start()
        _TALLIES.add(self)


# prometheus_client's Histogram has no public way to add counts to a bucket, only observe()
# one value at a time; these are the attributes observe() itself writes (pinned by
# tests/unit/test_metrics_tally.py against observe()'s own exposition).
def _upper_bounds(histogram: Histogram) -> list[float]:
    return list(histogram._upper_bounds)


def _add_observations(histogram: Histogram, totals: list[int], written: list[int]) -> None:
    for i, total in enumerate(totals):
        if total != written[i]:
            histogram._buckets[i].inc(total - written[i])
            written[i] = total


def _histogram_sum(histogram: Histogram) -> Any:
    return histogram._sum


def _flush_every(tally: weakref.ref[AdmissionTally], seconds: float) -> None:
    """The timer: flush every `seconds` while the tally lives (one per app, and tests make
    many apps)."""
    while True:
        time.sleep(seconds)
        alive = tally()
        if alive is None:
            return
        alive.flush()
        del alive


_TALLIES: weakref.WeakSet[AdmissionTally] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """A worker that stops writes what its last second recorded."""
    for tally in list(_TALLIES):
        tally.flush()


def kind_label(request: Mapping[str, Any]) -> str:
    """The `kind` label of an admission request: one of KINDS, else "other"."""
    kind = request.get("kind")
    name = kind.get("kind") if isinstance(kind, Mapping) else None
    return name if isinstance(name, str) and name in KINDS else OTHER_KIND


def new_metrics() -> Metrics:
    """Fresh metrics in a registry of their own (one per app, so tests can make many)."""
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        requests=Counter(
            "imagestreams_admission_requests",
            "Admission reviews answered, by kind and result.",
            ["kind", "result"],
            registry=registry,
        ),
        latency=Histogram(
            "imagestreams_admission_duration_seconds",
            "Time to answer one admission review, parsing included.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        images_resolved=Counter(
            "imagestreams_images_resolved",
            "Container images rewritten to pinned references.",
            registry=registry,
        ),
        warnings=Counter(
            "imagestreams_admission_warnings",
            "Warnings returned (tags with no image yet, and similar).",
            registry=registry,
        ),
        index_streams=Gauge(
            "imagestreams_index_streams",
            "Image streams held in the admission index.",
            registry=registry,
            multiprocess_mode="livemax",
        ),
        build_info=_build_info(registry),
    )


def _build_info(registry: CollectorRegistry) -> Gauge:
    gauge = Gauge(
        "imagestreams_build_info",
        "Always 1: the version and source revision of this build, and its Python.",
        ["version", "revision", "python"],
        registry=registry,
        multiprocess_mode="max",  # the same 1 from every worker: one series
    )
    gauge.labels(**build.info_labels(build.current(os.environ), platform.python_version())).set(1)
    return gauge
