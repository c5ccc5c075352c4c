"""Import failure reasons: a fixed vocabulary, each failure mapped to the one that says what
happened (OpenShift's NotFound/Unauthorized/Forbidden, and our own where OpenShift lumps
throttling, outages, deadlines and unreachable registries into InternalError)."""

from __future__ import annotations

import pytest
import requests

from webhook.controller.importer import REASONS, ImportResult
from webhook.controller.metrics import ControllerMetrics
from webhook.registry.client import connection_error
from webhook.registry.errors import (
    Forbidden,
    InternalError,
    NotFound,
    RateLimited,
    RegistryError,
    Timeout,
    TLSHandshakeFailed,
    Unauthorized,
    Unavailable,
    Unreachable,
    for_status,
)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, NotFound),
        (401, Unauthorized),
        (403, Forbidden),
        (429, RateLimited),
        (500, Unavailable),
        (502, Unavailable),
        (503, Unavailable),
        (504, Unavailable),
        (400, InternalError),
        (405, InternalError),
        (418, InternalError),
        (302, InternalError),  # a redirect that was not followed is an unexpected answer
    ],
)
def test_an_http_status_names_its_reason(status: int, error: type[RegistryError]) -> None:
    assert for_status(status) is error


@pytest.mark.parametrize(
    ("exception", "reason"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), "Timeout"),
        (requests.exceptions.ReadTimeout("read timed out"), "Timeout"),
        (requests.exceptions.SSLError("certificate verify failed"), "TLSHandshakeFailed"),
        (requests.exceptions.ConnectionError("Connection refused"), "Unreachable"),
        (requests.exceptions.ConnectionError("Name or service not known"), "Unreachable"),
        (requests.exceptions.ChunkedEncodingError("connection reset"), "Unreachable"),
        (requests.exceptions.TooManyRedirects("more than 10 redirects"), "InternalError"),
    ],
)
def test_no_answer_names_its_reason(exception: requests.RequestException, reason: str) -> None:
    error = connection_error("could not reach registry r.example", exception)
    assert error.reason == reason
    assert error.message == "could not reach registry r.example"
    # Code that treats every other failure alike still catches the new ones.
    assert isinstance(error, InternalError)


def test_the_vocabulary_is_fixed_and_distinct() -> None:
    reasons = [NotFound, Unauthorized, Forbidden, RateLimited, Unavailable, Timeout]
    reasons += [Unreachable, TLSHandshakeFailed, InternalError]
    assert {error.reason for error in reasons} <= set(REASONS)
    assert len(set(REASONS)) == len(REASONS) == 10  # and Conflict


def _result(reason: str) -> ImportResult:
    condition = {"type": "ImportSuccess", "status": "False", "reason": reason, "message": "m"}
    return ImportResult("t", condition=condition)


def test_the_metric_labels_each_reason_and_nothing_else() -> None:
    metrics = ControllerMetrics()
    for reason in REASONS:
        metrics.observe_import("r.example", _result(reason), "spec", 0.1)
    metrics.observe_import("r.example", _result("Made\ud800Up"), "spec", 0.1)
    metrics.observe_import("r.example", ImportResult("t", event={"image": "sha256:a"}), "spec", 0)
    results = {
        sample.labels["result"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "imagestreams_imports"
        for sample in family.samples
        if sample.name == "imagestreams_imports_total"
    }
    assert results == {**dict.fromkeys(REASONS, 1.0), "InternalError": 2.0, "success": 1.0}
