"""webhook/kube/errors.py reads the thin client's ApiError as it reads the kubernetes client's
ApiException, and API_ERRORS catches both (StreamStatus writes through either); the status
write's path quotes its names as collection_path does. Against the API server:
tests/e2e/test_stream_status_e2e.py."""

from __future__ import annotations

import json

import pytest

from webhook.kube import api, errors

STATUS = {"kind": "Status", "reason": "Invalid", "code": 422, "message": "status.tags: Invalid"}


@pytest.mark.parametrize("thin", [True, False], ids=["ApiError", "ApiException"])
def test_both_clients_errors_read_alike_and_are_caught_alike(thin: bool) -> None:
    from kubernetes.client.exceptions import ApiException

    err: Exception
    if thin:
        err = errors.ApiError(422, "Unprocessable Entity", json.dumps(STATUS))
    else:
        err = ApiException(status=422, reason="Unprocessable Entity")
        err.body = json.dumps(STATUS)
    assert isinstance(err, errors.API_ERRORS)
    assert errors.status_of(err) == errors.INVALID
    assert errors.body_of(err) == STATUS
    assert errors.server_message(err) == "status.tags: Invalid"
    assert errors.describe(err) == "422: status.tags: Invalid"


def test_a_thin_error_without_a_status_body_says_its_reason() -> None:
    err = errors.ApiError(502, "Bad Gateway", "<html>")
    assert errors.body_of(err) == {} and errors.server_message(err) == "Bad Gateway"


def test_the_status_path_quotes_its_names() -> None:
    assert api._status_path("team", "app") == (
        "/apis/image.openshift.io/v1/namespaces/team/imagestreams/app/status"
    )
    assert api._status_path("te am", "a/b") == (
        "/apis/image.openshift.io/v1/namespaces/te%20am/imagestreams/a%2Fb/status"
    )
