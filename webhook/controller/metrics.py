"""Prometheus metrics of the import controller (served by `controller --metrics-bind`).

Every label takes its values from a bounded set. Registries are chosen by tenants (any
ImageStream may name any host), so the `registry` label names only the registries the
operator configured (allowed, insecure, the local registry, `--metrics-registry`) and a few
well-known public ones; every other host, token servers and blob CDNs included, is "other".
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Sized

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook.controller.importer import INTERNAL_ERROR, REASONS, ImportResult
from webhook.model import build
from webhook.registry.credentials import canonical_registry
from webhook.registry.guard import api_host

# No `_created` series: one more series per labelled child, of no use on a dashboard.
prometheus_client.disable_created_metrics()

_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OTHER_REGISTRY = "other"
WELL_KNOWN_REGISTRIES = (
    "docker.io",
    "quay.io",
    "ghcr.io",
    "gcr.io",
    "registry.k8s.io",
    "public.ecr.aws",
    "mcr.microsoft.com",
)


def registry_labels(named: Iterable[str]) -> dict[str, str]:
    """host → label for the named registries: each by its name, its API host too (Docker
    Hub's requests go to registry-1.docker.io)."""
    labels: dict[str, str] = {}
    for name in (*WELL_KNOWN_REGISTRIES, *named):
        label = canonical_registry(name)
        if label:
            labels.setdefault(label, label)
            labels.setdefault(api_host(label), label)
    return labels


def registry_label(host: str, labels: dict[str, str]) -> str:
    """The `registry` label of `host`: a named registry, else "other"."""
    return labels.get(canonical_registry(host), OTHER_REGISTRY)


class ControllerMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, registries: Iterable[str] = ()
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._labels = registry_labels(registries)
        self.build_info = Gauge(
            "imagestreams_build_info",
            "Always 1: the version and source revision of this build, and its Python.",
            ["version", "revision", "python"],
            registry=self.registry,
        )
        self.build_info.labels(**build_labels()).set(1)
        self.imports = Counter(
            "imagestreams_imports",
            "Tag imports, by registry, result (success, unchanged, or the failure reason:"
            " NotFound, Unauthorized, Forbidden, RateLimited, Unavailable, Timeout,"
            " Unreachable, TLSHandshakeFailed, Conflict, InternalError) and trigger (spec,"
            " retry, scheduled).",
            ["registry", "result", "trigger"],
            registry=self.registry,
        )
        self.import_seconds = Histogram(
            "imagestreams_import_duration_seconds",
            "Time to import one tag, rate-limit wait included.",
            ["registry"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry_requests = Counter(
            "imagestreams_registry_requests",
            "HTTP requests to registries, by status code (0: no answer).",
            ["registry", "method", "code"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "imagestreams_status_writes",
            "ImageStream status updates written to the API server.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "imagestreams_queue_depth",
            "Streams waiting to be reconciled (due now or later).",
            registry=self.registry,
        )
        self.scheduled_age = Gauge(
            "imagestreams_scheduled_pass_age_seconds",
            "Seconds since the least recently checked scheduled tag was checked; below the"
            " scheduled interval when the last pass was complete.",
            registry=self.registry,
        )

    def watch(self, queue: Sized, oldest_check: Callable[[], float]) -> None:
        self.queue_depth.set_function(lambda: float(len(queue)))
        self.scheduled_age.set_function(oldest_check)

    def observe_import(
        self, registry: str, result: ImportResult, trigger: str, seconds: float
    ) -> None:
        if result.unchanged:
            outcome = "unchanged"
        elif result.succeeded:
            outcome = "success"
        else:  # a reason outside the fixed set would be a bug: never a new series for it
            outcome = result.reason if result.reason in REASONS else INTERNAL_ERROR
        label = self.registry_label(registry)
        self.imports.labels(registry=label, result=outcome, trigger=trigger).inc()
        self.import_seconds.labels(registry=label).observe(seconds)

    def registry_label(self, host: str) -> str:
        return registry_label(host, self._labels)

    def count_request(self, host: str, method: str, status: int) -> None:
        label = self.registry_label(host)
        self.registry_requests.labels(registry=label, method=method, code=str(status)).inc()


def build_labels() -> dict[str, str]:
    """The build_info labels of this process."""
    return build.info_labels(build.current(os.environ), platform.python_version())
