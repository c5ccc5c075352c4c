"""Typed registry errors, named after OpenShift's ImportSuccess condition reasons.

NotFound, Unauthorized, Forbidden and InternalError are the reasons an import failure is
recorded with; each error carries a message a person can act on (registry host, repository,
tag or digest, HTTP status) and never a credential.
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


class AddressRefused(Forbidden):
    """The address guard refused to connect. Deliberately not an OSError: urllib3 and requests
    let it through unwrapped, so it reaches the caller with its own message."""


class DigestMismatch(InternalError):
    """The content fetched does not hash to the digest asked for or advertised."""
