"""Errors from the API server, as the rest of the code needs them: the status, the server's
own message, and the exception classes to catch.

`errors.ApiException` is the kubernetes client's class, resolved on first use so that
importing this module stays cheap for the CLI (the client takes a while to import); no module
outside webhook.kube imports the client itself. `ApiError` is the thin client's
(webhook.kube.listwatch), and `errors.API_ERRORS` both, for code that calls either.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException as ApiException

    API_ERRORS: tuple[type[ApiException], type[ApiError]]

NOT_FOUND, CONFLICT, INVALID = 404, 409, 422


class ApiError(Exception):
    """The API server answered the thin client with an error status (or a watch's ERROR
    event).

    `status`, `reason` and `body` as on the kubernetes client's ApiException, so that the
    functions below read both alike."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = body


def __getattr__(name: str) -> Any:
    if name in ("ApiException", "API_ERRORS"):
        from kubernetes.client.exceptions import ApiException

        return ApiException if name == "ApiException" else (ApiException, ApiError)
    raise AttributeError(name)


def status_of(err: BaseException) -> int | None:
    """The HTTP status of an API error; None for anything else (a refused connection)."""
    status = getattr(err, "status", None)
    return int(status) if isinstance(status, int) else None


def body_of(err: BaseException) -> dict[str, Any]:
    """The Status object the API server answered with, or {}."""
    try:
        body = json.loads(getattr(err, "body", None) or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def server_message(err: BaseException) -> str:
    """What the API server said (its Status message), else the HTTP reason, else the error."""
    message = body_of(err).get("message")
    if isinstance(message, str) and message:
        return message
    return str(getattr(err, "reason", None) or err)


def describe(err: BaseException) -> str:
    """`STATUS: message` for an API error, the error itself otherwise: one line for logs."""
    status = status_of(err)
    return f"{status}: {server_message(err)}" if status is not None else str(err)
