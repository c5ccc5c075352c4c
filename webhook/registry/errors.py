"""Typed registry errors, named after the ImportSuccess condition reason each is recorded with.

OpenShift's image import records NotFound, Unauthorized, Forbidden and, for everything else,
InternalError. That lumps together what a person (or an alert) must tell apart: a registry
that throttles us, one that is down, one that does not answer in time and one we cannot even
connect to. So those have reasons of their own (`REASONS` is the whole, fixed vocabulary):

| reason             | when                                                            |
| ------------------ | --------------------------------------------------------------- |
| NotFound           | HTTP 404: no such repository, tag or digest                     |
| Unauthorized       | HTTP 401: no credentials, or the registry refused them          |
| Forbidden          | HTTP 403, or the address guard / a policy refused the registry  |
| RateLimited        | HTTP 429, still after the retries `Retry-After` allowed          |
| Unavailable        | HTTP 5xx: the registry answered but cannot serve                |
| Timeout            | no connection, or no (complete) answer, within the deadline     |
| Unreachable        | no connection: refused, reset, a name that does not resolve     |
| TLSHandshakeFailed | connected, but TLS failed (certificate not trusted, not TLS)    |
| InternalError      | anything else: an unexpected answer, content we refuse to take  |

Each error carries a message a person can act on (registry host, repository, tag or digest,
HTTP status) and never a credential.
"""

from __future__ import annotations

from typing import ClassVar


class RegistryError(Exception):
    """A failed registry operation; `reason` is the ImportSuccess condition reason."""

    reason: ClassVar[str] = "InternalError"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        # Seconds the registry asked us to wait (429/503): the caller can schedule the retry.
        self.retry_after = retry_after


class NotFound(RegistryError):
    reason = "NotFound"


class Unauthorized(RegistryError):
    reason = "Unauthorized"


class Forbidden(RegistryError):
    reason = "Forbidden"


class InternalError(RegistryError):
    reason = "InternalError"


class RateLimited(InternalError):
    """Subclasses of InternalError, so code that handles "some other failure" still does."""

    reason = "RateLimited"


class Unavailable(InternalError):
    reason = "Unavailable"


class Timeout(InternalError):
    reason = "Timeout"


class Unreachable(InternalError):
    reason = "Unreachable"


class TLSHandshakeFailed(Unreachable):
    reason = "TLSHandshakeFailed"


class AddressRefused(Forbidden):
    """The address guard refused to connect. Deliberately not an OSError: urllib3 and requests
    let it through unwrapped, so it reaches the caller with its own message."""


class DigestMismatch(InternalError):
    """The content fetched does not hash to the digest asked for or advertised."""


REASONS: tuple[str, ...] = (
    NotFound.reason,
    Unauthorized.reason,
    Forbidden.reason,
    RateLimited.reason,
    Unavailable.reason,
    Timeout.reason,
    Unreachable.reason,
    TLSHandshakeFailed.reason,
    InternalError.reason,
)


def for_status(status: int) -> type[RegistryError]:
    """The error type for an HTTP status a registry answered with (not 2xx)."""
    if status == 404:
        return NotFound
    if status == 401:
        return Unauthorized
    if status == 403:
        return Forbidden
    if status == 429:
        return RateLimited
    if 500 <= status < 600:
        return Unavailable
    return InternalError
