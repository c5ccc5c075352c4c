"""The Flask app: POST /mutate and /validate, GET /healthz, /readyz, /metrics. Thin by design.

Every body that is not an AdmissionReview gets HTTP 400 with a JSON error; every review is
answered. Should answering still fail (a bug), /mutate allows the object unchanged with a
warning, and /validate answers 400, so that the registration's failurePolicy decides, as it
does when the policies have not loaded yet; both log the traceback.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import get_content_length, get_input_stream

from webhook.model.streams import StreamEntry
from webhook.serving import admission
from webhook.serving.metrics import Metrics, kind_label, new_metrics

if TYPE_CHECKING:
    from webhook.kube.policy_cache import PolicyIndex

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
# An oversized body is read and thrown away up to this much, so the client gets the 400
# instead of a reset connection; past it the connection is simply closed.
_DRAIN_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024

INTERNAL_ERROR = "imagestreams webhook: internal error, images left as they are (see its log)"


class Index(Protocol):
    @property
    def ready(self) -> bool: ...

    def get(self, namespace: str, name: str) -> StreamEntry | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class AppConfig:
    index: Index
    max_body_bytes: int = MAX_BODY_BYTES
    policy: PolicyIndex | None = None  # None: /validate allows everything


def create_app(config: AppConfig, metrics: Metrics | None = None) -> Flask:
    app = Flask("imagestreams")
    metrics = metrics or new_metrics()
    index = config.index
    policy_metrics = None
    if config.policy is not None:
        from webhook.serving.validation import new_policy_metrics

        policy_metrics = new_policy_metrics(metrics.registry)

    @app.post("/mutate")
    def mutate() -> Response:
        started = time.perf_counter()
        review = _read_review(config.max_body_bytes, metrics)
        if isinstance(review, Response):
            return review
        try:
            outcome = admission.mutate(review, index, loaded=index.ready)
        except Exception:  # the last resort: a bug must not fail every admission
            log.exception("/mutate failed on review %s", review["uid"])
            metrics.tally.record(kind_label(review), "error")
            outcome = admission.Outcome(warnings=[INTERNAL_ERROR])
            return _json(admission.respond(review["uid"], outcome))
        _observe(metrics, review, outcome, started)
        return _json(admission.respond(review["uid"], outcome))

    @app.post("/validate")
    def validate() -> Response:
        from webhook.serving.validation import answer

        review = _read_review(config.max_body_bytes, metrics)
        if isinstance(review, Response):
            return review
        if config.policy is None:
            return _json(admission.respond(review["uid"], admission.Outcome()))
        if not config.policy.ready:
            # An error, not an answer: the registration's failurePolicy decides.
            return _json({"error": "image policy index not loaded yet"}, 503)
        try:
            return _json(answer(review, config.policy, policy_metrics))
        except Exception:  # the last resort: the registration's failurePolicy decides
            log.exception("/validate failed on review %s", review["uid"])
            return _json({"error": "internal error judging this review (see the log)"}, 400)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        return _json({"error": err.description or err.name}, err.code or 500)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        if not index.ready:
            return _json({"status": "image stream index not loaded yet"}, 503)
        if config.policy is not None and not config.policy.ready:
            return _json({"status": "image policy index not loaded yet"}, 503)
        return _json({"status": "ok", "streams": len(index)})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        metrics.index_streams.set(len(index))
        data, content_type = metrics.exposition()
        return Response(data, content_type=content_type)

    return app


def _read_review(limit: int, metrics: Metrics) -> Mapping[str, Any] | Response:
    """The request's AdmissionReview request, or the HTTP 400 that says why there is none."""
    try:
        data = _read_body(limit)
    except (OSError, ParseException, HTTPException) as err:
        # A broken chunked encoding, a client gone mid-body: gunicorn closes the connection.
        return _bad_request(f"the body could not be read: {type(err).__name__}", metrics)
    if data is None:
        return _bad_request(f"body is larger than {limit} bytes", metrics)
    try:
        return admission.parse_review(json.loads(data))
    except admission.BadReview as err:
        return _bad_request(str(err), metrics)
    except RecursionError:
        return _bad_request("body is nested too deeply", metrics)
    except ValueError:  # UnicodeDecodeError included
        return _bad_request("body is not valid JSON", metrics)


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` (the excess is drained)."""
    # werkzeug's functions on the environ give what request.content_length and
    # request.stream give (this app sets no MAX_CONTENT_LENGTH), without their header
    # objects and config lookups: 12 µs less a review.
    environ = request.environ
    length = get_content_length(environ)
    if length is not None and length > _DRAIN_LIMIT:
        return None
    stream = get_input_stream(environ)
    if length is not None and length <= limit:
        # What the API server sends: one read of the announced length (the stream ends
        # there), not a loop of 64 KiB reads; should it come short, read on.
        data = stream.read(length)
        return data if len(data) == length else _rest(stream, data, limit)
    return _rest(stream, b"", limit)


def _rest(stream: Any, start: bytes, limit: int) -> bytes | None:
    """Read on after `start`, in chunks, to the end or past `limit` (the excess drained)."""
    chunks: list[bytes] = [start]
    size = len(start)
    while size <= limit and (chunk := stream.read(min(_CHUNK, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    if size <= limit:
        return b"".join(chunks)
    while size < _DRAIN_LIMIT and (chunk := stream.read(_CHUNK)):
        size += len(chunk)
    return None


def _observe(
    metrics: Metrics, review: Mapping[str, Any], outcome: admission.Outcome, started: float
) -> None:
    metrics.tally.record(
        kind_label(review),
        "patched" if outcome.patch else "unchanged",
        time.perf_counter() - started,
        len(outcome.patch),
        len(outcome.warnings),
    )


def _bad_request(message: str, metrics: Metrics) -> Response:
    metrics.tally.record("", "bad_request")
    return _json({"error": message}, 400)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
