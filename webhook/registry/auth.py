"""Registry auth, pure: `WWW-Authenticate` challenges, bearer tokens and `Retry-After`.

A registry answers a request without the right authorization with a challenge (RFC 7235):
`Bearer realm=…,service=…,scope=…` for a token fetched from the realm (anonymous, or with
basic auth) for scopes such as `repository:NAME:pull`, or `Basic` for HTTP basic auth. This
module parses those challenges and the token server's answer; `client.RegistryClient` sends
the requests, and caches tokens per (registry, scopes, identity) until they expire.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.registry.errors import InternalError


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lowercased: "bearer", "basic"
    params: Mapping[str, str] = field(default_factory=dict)  # names lowercased


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] in _TOKEN_CHARS:
        i += 1
    return text[start:i], i


def _read_value(text: str, i: int) -> tuple[str, int]:
    if i < len(text) and text[i] == '"':
        chars: list[str] = []
        i += 1
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars), i + 1
    # Unquoted: a token by the RFC, but some registries send bare URLs, so read to a separator.
    start = i
    while i < len(text) and text[i] not in ", \t":
        i += 1
    return text[start:i], i


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value (RFC 7235) into its challenges, in order.

    `Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"`
    → [Challenge("bearer", {"realm": …, "service": "reg", "scope": …})]. Several challenges
    may share one header, separated by commas; an unparsable tail is skipped, never raised.
    """
    challenges: list[Challenge] = []
    i = 0
    while i < len(header):
        i = _skip(header, i, " \t,")
        scheme, i = _read_token(header, i)
        if not scheme:
            i += 1  # a character that cannot start a challenge
            continue
        params: dict[str, str] = {}
        while True:
            name, after_name = _read_token(header, _skip(header, i, " \t"))
            equals = _skip(header, after_name, " \t")
            if not name or equals >= len(header) or header[equals] != "=":
                break  # the next challenge's scheme, a token68, or the end
            value, i = _read_value(header, _skip(header, equals + 1, " \t"))
            params[name.lower()] = value
            following = _skip(header, i, " \t")
            if following < len(header) and header[following] == ",":
                i = following + 1
                continue
            i = following
            break
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def repository_scope(repository: str, actions: str = "pull") -> str:
    """The token scope for `actions` ("pull", "pull,push", "delete") on `repository`."""
    return f"repository:{repository}:{actions}"


def pull_scope(repository: str) -> str:
    return repository_scope(repository, "pull")


def token_query(challenge: Challenge, scopes: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    """The realm URL and query parameters (one `scope` each, then `service`) for a bearer
    token that grants `scopes`."""
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise InternalError(f"the registry's bearer challenge names no usable realm: {realm!r}")
    params = [("scope", scope) for scope in scopes]
    if challenge.params.get("service"):
        params.append(("service", challenge.params["service"]))
    return realm, params


def token_request(challenge: Challenge, repository: str) -> tuple[str, dict[str, str]]:
    """The realm URL and query parameters for a bearer token that can pull `repository`."""
    realm, params = token_query(challenge, [pull_scope(repository)])
    return realm, dict(params)


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: float  # on the client's monotonic clock


# Tokens without `expires_in` live 60 s (distribution token spec); renew a little early so a
# token does not expire between the check and the registry reading it.
_DEFAULT_TOKEN_LIFETIME = 60.0
_TOKEN_EXPIRY_MARGIN = 10.0


def parse_token_response(body: Any, now: float) -> Token:
    """`{"token": …}` or `{"access_token": …}` with an optional `expires_in` (seconds).

    `issued_at` is ignored on purpose: expiry is measured on our own clock from when the
    answer arrived, which is immune to clock skew between us and the token server.
    """
    if not isinstance(body, Mapping):
        raise InternalError("the token server's answer is not a JSON object")
    value = body.get("token") or body.get("access_token")
    if not isinstance(value, str) or not value:
        raise InternalError("the token server's answer holds no token")
    lifetime = body.get("expires_in")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = _DEFAULT_TOKEN_LIFETIME
    margin = min(_TOKEN_EXPIRY_MARGIN, float(lifetime) / 2)
    return Token(value, now + float(lifetime) - margin)


_MAX_RETRY_AFTER_DIGITS = 12


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (wall clock): delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # int() refuses more than 4300 digits; a year is 8 digits of seconds.
        return float(int(text)) if len(text) <= _MAX_RETRY_AFTER_DIGITS else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
