"""Prometheus metrics of the webhook, valid across gunicorn workers.

Under gunicorn each worker is its own process; with PROMETHEUS_MULTIPROC_DIR set (the
`serve` command sets it) prometheus_client writes values to files there and `/metrics`
aggregates them, so a scrape sees every worker, not just the one that answered.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    images_resolved: Counter
    warnings: Counter
    index_streams: Gauge
    build_info: Gauge

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


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
