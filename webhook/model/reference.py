"""Image reference grammar: parse, normalize and format references.

Follows the grammar of github.com/distribution/reference, which containerd, CRI-O and the
Docker CLI all use, so a string that a runtime would pull is parsed the same way here:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path
    domain     := host [ ":" port ]        host: DNS name, IPv4, or "[" IPv6 "]"
    path       := component ( "/" component )*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex

The first "/"-separated part is a domain only when it contains "." or ":", is "localhost",
or has uppercase letters (a path component never does); otherwise the reference lives on
Docker Hub. Pure functions over strings, no I/O.

Length: the path, not domain + path, may have at most 255 characters, counted as a runtime
counts it (distribution/reference v0.6 `ParseNormalizedNamed`): a Docker Hub name counts with
the `library/` it implies, so a bare name has at most 247. `example.com/` + 255 characters is
valid. OpenShift's own parser (library-go) limits the whole name as written to 255 instead;
we follow v0.6 on purpose, because admission and import must accept exactly what a container
runtime would pull.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
# distribution/reference v0.6 RepositoryNameTotalLengthMax: the path after the domain.
PATH_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_HEX64_RE = re.compile(r"[a-f0-9]{64}")

# Hex lengths of the algorithms that registries and runtimes accept.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """A string that is not a valid image reference; the message says why."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"invalid image reference {reference!r}: {reason}")
        self.reference = reference
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference. `domain` is "" when the string named none."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository as written: `domain/path`, or `path` alone."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def is_short(self) -> bool:
        """A bare `name` or `name:tag`: no registry, no path, no digest."""
        return not self.domain and "/" not in self.path and self.digest is None

    @property
    def last_component(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def normalized(self) -> Reference:
        """The fully qualified form: `mysql` → `docker.io/library/mysql`."""
        domain = self.domain or DEFAULT_DOMAIN
        if domain == LEGACY_DEFAULT_DOMAIN:
            domain = DEFAULT_DOMAIN
        path = self.path
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = OFFICIAL_REPO_PREFIX + path
        return Reference(domain, path, self.tag, self.digest)

    def with_digest(self, digest: str) -> Reference:
        """This repository pinned to `digest` (the tag is dropped: the digest decides)."""
        return Reference(self.domain, self.path, None, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse(reference: str) -> Reference:
    """Parse `reference` exactly as written (no defaults filled in).

    Raises InvalidReference with the reason when the string is not a valid reference.
    """
    if not reference:
        raise InvalidReference(reference, "empty reference")
    if reference != reference.strip():
        raise InvalidReference(reference, "leading or trailing whitespace")

    remainder, digest = _split_digest(reference)
    name, tag = _split_tag(remainder, reference)
    domain, path = _split_domain(name)

    if domain and not _DOMAIN_RE.fullmatch(domain):
        raise InvalidReference(reference, f"invalid registry host {domain!r}")
    if not path:
        raise InvalidReference(reference, "repository name is empty")
    if path != path.lower():
        raise InvalidReference(reference, "repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise InvalidReference(reference, f"invalid repository name {path!r}")
    # Counted after normalizing, as a runtime does: `mysql` is the path `library/mysql`.
    normalized_path = Reference(domain, path).normalized().path
    if len(normalized_path) > PATH_LENGTH_MAX:
        implied = " (counting the implied library/)" if normalized_path != path else ""
        raise InvalidReference(
            reference,
            f"repository name must not be more than {PATH_LENGTH_MAX} characters{implied}",
        )
    if not domain and _HEX64_RE.fullmatch(path):
        # A bare 64-hex string is an image ID, never a repository name.
        raise InvalidReference(reference, "cannot use a 64-character hexadecimal string as a name")
    return Reference(domain, path, tag, digest)


def parse_normalized(reference: str) -> Reference:
    """Parse and fill in the defaults: Docker Hub domain and the `library/` prefix."""
    return parse(reference).normalized()


def is_valid_digest(digest: str) -> bool:
    return _validate_digest(digest) is None


def _split_digest(reference: str) -> tuple[str, str | None]:
    if "@" not in reference:
        return reference, None
    remainder, digest = reference.split("@", 1)
    problem = _validate_digest(digest)
    if problem:
        raise InvalidReference(reference, problem)
    return remainder, digest


def _validate_digest(digest: str) -> str | None:
    if not _DIGEST_RE.fullmatch(digest):
        return f"invalid digest {digest!r}"
    algorithm, hex_part = digest.split(":", 1)
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        return f"unsupported digest algorithm {algorithm!r}"
    if len(hex_part) != expected or hex_part != hex_part.lower():
        return f"{algorithm} digest must be {expected} lowercase hexadecimal characters"
    return None


def _split_tag(remainder: str, reference: str) -> tuple[str, str | None]:
    # A ":" after the last "/" starts the tag; one before it belongs to a port.
    colon = remainder.rfind(":")
    if colon == -1 or "/" in remainder[colon:]:
        return remainder, None
    tag = remainder[colon + 1 :]
    if not _TAG_RE.fullmatch(tag):
        raise InvalidReference(reference, f"invalid tag {tag!r}")
    return remainder[:colon], tag


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep:
        return "", name
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        return first, rest
    return "", name
