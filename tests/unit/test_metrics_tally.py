"""The webhook's metrics are tallied per worker and written in batches: what a scrape shows
is exactly what writing each review at once showed, only up to FLUSH_SECONDS later."""

from __future__ import annotations

import time

import pytest

from webhook.serving import metrics as metrics_module
from webhook.serving.metrics import AdmissionTally, Metrics, new_metrics

# (kind, result, seconds or None, images, warnings): every bucket edge, below and above
REVIEWS = [
    ("Deployment", "patched", 0.0004, 4, 0),
    ("Deployment", "patched", 0.0005, 4, 1),  # on a bucket's upper bound: that bucket
    ("Pod", "unchanged", 0.00051, 0, 0),
    ("CronJob", "patched", 0.3, 1, 2),
    ("Pod", "unchanged", 2.5, 0, 0),  # past the last bound: +Inf
    ("other", "error", None, 0, 0),
    ("", "bad_request", None, 0, 0),
]


def written_at_once() -> bytes:
    """What the metrics held when each review was written to them directly."""
    m = new_metrics()
    for kind, result, seconds, images, warnings in REVIEWS:
        m.requests.labels(kind=kind, result=result).inc()
        if seconds is not None:
            m.latency.observe(seconds)
        if images:
            m.images_resolved.inc(images)
        if warnings:
            m.warnings.inc(warnings)
    return m.exposition()[0]


def record_all(tally: AdmissionTally) -> None:
    for review in REVIEWS:
        tally.record(*review)


def test_a_flushed_tally_scrapes_as_writing_each_review_did() -> None:
    m = new_metrics()
    record_all(m.tally)
    m.tally.flush()
    m.tally.flush()  # nothing new: nothing added twice
    assert m.exposition()[0] == written_at_once()


def test_the_scrape_flushes_what_its_worker_recorded() -> None:
    m = new_metrics()
    record_all(m.tally)
    assert m.exposition()[0] == written_at_once()


def test_recording_writes_nothing_until_the_flush() -> None:
    m = new_metrics()
    empty = _requests_total(m)
    record_all(m.tally)
    assert _requests_total(m) == empty == 0
    m.tally.flush()
    assert _requests_total(m) == len(REVIEWS)
    m.tally.record("Pod", "patched", 0.001, 1)  # after a flush, only the new one is added
    m.tally.flush()
    assert _requests_total(m) == len(REVIEWS) + 1


def test_a_worker_that_takes_no_scrape_writes_within_the_flush_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "FLUSH_SECONDS", 0.05)
    m = new_metrics()
    m.tally.record("Pod", "patched", 0.001, 1)
    deadline = time.monotonic() + 5
    while _requests_total(m) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _requests_total(m) == 1


def _requests_total(m: Metrics) -> float:
    total = 0.0
    for family in m.registry.collect():
        if family.name == "imagestreams_admission_requests":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total
