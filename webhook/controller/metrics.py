"""Prometheus metrics of the import controller (served by `controller --metrics-bind`)."""

from __future__ import annotations

from collections.abc import Callable, Sized

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook.controller.importer import INTERNAL_ERROR, REASONS, ImportResult

_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self.imports.labels(registry=registry, result=outcome, trigger=trigger).inc()
        self.import_seconds.labels(registry=registry).observe(seconds)
