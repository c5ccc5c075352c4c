"""Errors from the API server, as the rest of the code needs them: the status, the server's
own message, and the exception class to catch.

`errors.ApiException` is the client's class, resolved on first use so that importing this
module stays cheap for the CLI (the client takes a while to import); no module outside
webhook.kube imports the client itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException as ApiException

NOT_FOUND, CONFLICT, INVALID = 404, 409, 422


def __getattr__(name: str) -> Any:
    if name == "ApiException":
        from kubernetes.client.exceptions import ApiException

        return ApiException
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
