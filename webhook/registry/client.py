"""OCI distribution API v2 client: manifests by tag or digest, with registry auth.

What an import needs and nothing more: HEAD a manifest for its digest (cheap, and Docker Hub
does not count it against the pull limit), GET it when the content matters (an index's
platforms), with

- auth from the `WWW-Authenticate` challenge: anonymous or basic-auth bearer tokens fetched
  from the challenge's realm for `repository:NAME:pull`, reused per (registry, scope,
  credential) until they expire; or HTTP basic auth when the registry asks for it;
- the digest of every fetched manifest verified against the digest asked for or advertised,
  and a size limit, so a registry (or anything between) cannot hand over other content;
- connect/read timeouts, and `Retry-After` honoured on 429/503 a bounded number of times;
- HTTPS with verified certificates unless the caller says insecure (`importPolicy.insecure`)
  or the operator listed the registry as insecure;
- an address guard on every connection (registry, token realm, redirects): an ImageStream is
  user input, so by default the controller refuses loopback, link-local (cloud metadata),
  private and other non-global addresses unless the operator allowed that `host[:port]`.
  The check happens where the socket is opened, on the addresses actually dialled, so DNS
  rebinding between a check and the connect does not get around it.

Errors are typed after OpenShift's ImportSuccess condition reasons (NotFound, Unauthorized,
Forbidden, InternalError) and carry a message a person can act on: registry host,
repository, tag or digest, HTTP status. Credentials never reach a message or a log line.

The parsing (challenge headers, token responses, manifests, platforms, Retry-After, address
classes) is pure and lives in module-level functions; the client class is the thin HTTP edge.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from webhook.model.reference import is_valid_digest
from webhook.registry.credentials import Credential, canonical_registry

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | IMAGE_MEDIA_TYPES
# Indexes first: without them a registry may answer a multi-arch tag with one platform.
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the limit the distribution registry itself enforces
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_ERROR_DETAIL_LIMIT = 300
_TOKEN_CACHE_PRUNE_AT = 4096
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


# ---------------------------------------------------------------------------------------------
# Errors


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


# ---------------------------------------------------------------------------------------------
# Pure: WWW-Authenticate challenges and tokens


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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (wall clock): delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


# ---------------------------------------------------------------------------------------------
# Pure: manifests and platforms


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm"}
# Variants that a runtime assumes when the index leaves them out.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def normalize_platform(os_name: str, architecture: str, variant: str = "") -> Platform:
    """Lowercase, and fold the usual aliases (`x86_64` → `amd64`, `aarch64` → `arm64`)."""
    arch = architecture.strip().lower()
    return Platform(os_name.strip().lower(), _ARCH_ALIASES.get(arch, arch), variant.strip().lower())


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_attestation(self) -> bool:
        """BuildKit's provenance/SBOM entries: listed in an index, but not runnable images."""
        if self.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            return True
        return self.platform is not None and self.platform == Platform("unknown", "unknown")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A fetched manifest: its verified digest, media type, raw bytes and, for an index, the
    manifests it lists."""

    digest: str
    media_type: str
    body: bytes = field(repr=False)
    manifests: tuple[Descriptor, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def size(self) -> int:
        return len(self.body)

    def platforms(self) -> tuple[Platform, ...]:
        return index_platforms(self.manifests)


def _media_type_of(document: Mapping[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";", 1)[0].strip().lower()
    if header in MANIFEST_MEDIA_TYPES:
        return header
    # OCI allows leaving mediaType out; the shape then tells the kind.
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), Mapping) and isinstance(document.get("layers"), list):
        return OCI_MANIFEST
    if document.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    return header or "unknown"


def _parse_descriptor(item: Any) -> Descriptor:
    if not isinstance(item, Mapping):
        raise InternalError("an index entry is not a JSON object")
    digest = item.get("digest")
    if not isinstance(digest, str) or not is_valid_digest(digest):
        raise InternalError(f"an index entry has an invalid digest: {digest!r}")
    media_type = item.get("mediaType")
    size = item.get("size")
    platform = None
    raw_platform = item.get("platform")
    if isinstance(raw_platform, Mapping):
        platform = normalize_platform(
            str(raw_platform.get("os", "")),
            str(raw_platform.get("architecture", "")),
            str(raw_platform.get("variant", "") or ""),
        )
    annotations = item.get("annotations")
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) else "",
        digest=digest,
        size=size if isinstance(size, int) and not isinstance(size, bool) else -1,
        platform=platform,
        annotations=(
            {str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, Mapping)
            else {}
        ),
    )


def parse_manifest(body: bytes, content_type: str | None, digest: str) -> Manifest:
    """Parse manifest bytes (already digest-verified) of one of the four accepted types."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InternalError(f"manifest {digest} is not valid JSON: {error}") from None
    if not isinstance(document, Mapping):
        raise InternalError(f"manifest {digest} is not a JSON object")
    media_type = _media_type_of(document, content_type)
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise InternalError(
            f"manifest {digest} has unsupported media type {media_type!r}; supported: OCI image"
            " index and manifest, Docker manifest list and schema 2 manifest"
        )
    manifests: tuple[Descriptor, ...] = ()
    if media_type in INDEX_MEDIA_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise InternalError(f"index {digest} has no manifests list")
        manifests = tuple(_parse_descriptor(item) for item in entries)
    return Manifest(digest=digest, media_type=media_type, body=body, manifests=manifests)


def index_platforms(descriptors: Iterable[Descriptor]) -> tuple[Platform, ...]:
    """The runnable platforms of an index, in index order, without attestations or repeats."""
    seen: list[Platform] = []
    for descriptor in descriptors:
        if (
            descriptor.platform
            and not descriptor.is_attestation
            and descriptor.platform not in seen
        ):
            seen.append(descriptor.platform)
    return tuple(seen)


def choose_platform(descriptors: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    """The index entry a runtime on `wanted` would pull, or None.

    OS and architecture must match. With a wanted variant, an entry with that variant (or
    none, when the wanted variant is the architecture's default) wins; without one, an entry
    with no variant or the default variant wins over other variants; otherwise index order.
    """
    default_variant = _DEFAULT_VARIANT.get(wanted.architecture, "")
    wanted_variant = wanted.variant or default_variant
    best: tuple[int, Descriptor] | None = None
    for descriptor in descriptors:
        platform = descriptor.platform
        if platform is None or descriptor.is_attestation:
            continue
        if platform.os != wanted.os or platform.architecture != wanted.architecture:
            continue
        variant = platform.variant or default_variant
        if variant == wanted_variant:
            rank = 0
        elif wanted.variant:
            continue  # a specific variant was asked for and this is another one
        else:
            rank = 1
        if best is None or rank < best[0]:
            best = (rank, descriptor)
    return best[1] if best else None


def compute_digest(body: bytes, algorithm: str = "sha256") -> str:
    hasher = _HASHES.get(algorithm)
    if hasher is None:
        raise InternalError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hasher(body).hexdigest()}"


def digest_matches(body: bytes, digest: str) -> bool:
    algorithm = digest.split(":", 1)[0]
    return algorithm in _HASHES and compute_digest(body, algorithm) == digest


# ---------------------------------------------------------------------------------------------
# Pure: registry hosts and the address guard


def api_host(registry: str) -> str:
    """Where a registry's API lives: Docker Hub's is not at `docker.io`."""
    canonical = canonical_registry(registry)
    return DOCKER_HUB_API_HOST if canonical == "docker.io" else canonical


def split_host_port(hostport: str) -> tuple[str, int | None]:
    """`host:5000` → ("host", 5000); `[::1]:5000` → ("::1", 5000); no port → None."""
    text = hostport.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""  # a bare IPv6 address or no port
    return host, (int(port_text) if port_text.isdigit() else None)


def host_in(hostport: str, listed: Iterable[str], port: int | None = None) -> bool:
    """Whether `hostport` (or host plus an explicit connection `port`) is in `listed`.

    An entry with a port matches that port only; an entry without one matches the host on
    the default ports (443, 80) only, so allowing `registry.internal` does not open every
    service on that machine.
    """
    host, own_port = split_host_port(hostport)
    effective = port if port is not None else own_port
    for entry in listed:
        entry_host, entry_port = split_host_port(entry)
        if canonical_registry(entry_host) != canonical_registry(host):
            continue
        if entry_port is None and effective in (None, 80, 443):
            return True
        if entry_port is not None and entry_port == effective:
            return True
    return False


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(address: IPAddress) -> str | None:
    """Why an import must not connect to `address` by default, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 hidden inside IPv6 reaches the same IPv4 host, so judge that host.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved or internal address"
    return None


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses of `host`, as the system resolver returns them (raises socket.gaierror)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class AddressGuard:
    """Resolves a host and refuses non-global addresses unless the operator allowed it."""

    def __init__(self, allowed: Iterable[str] = (), resolver: Resolver = system_resolver) -> None:
        self.allowed = tuple(allowed)
        self._resolver = resolver

    def check(self, host: str, port: int) -> list[str]:
        """The addresses to dial for `host:port`; raises AddressRefused if any is internal.

        One internal address refuses the whole name: a name that resolves both inside and
        outside is exactly what a rebinding attack looks like.
        """
        host = host.strip("[]").rstrip(".")
        addresses = self._resolver(host, port)
        if host_in(host, self.allowed, port):
            return addresses
        for text in addresses:
            problem = address_problem(ipaddress.ip_address(text.split("%", 1)[0]))
            if problem:
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise AddressRefused(
                    f"refusing to contact {shown}: it resolves to {text}, {problem}; an"
                    " ImageStream may not make the cluster call internal addresses (an operator"
                    f" can allow this registry with --allow-registry {shown})"
                )
        return addresses


# ---------------------------------------------------------------------------------------------
# The HTTP edge: guarded connections


def _guarded_socket(conn: HTTPConnection, guard: AddressGuard) -> socket.socket:
    """urllib3's `_new_conn`, dialling only the addresses the guard approved."""
    try:
        addresses = guard.check(conn.host, conn.port)
    except socket.gaierror as error:
        raise NameResolutionError(conn.host, conn, error) from error
    failure: Exception | None = None
    for address in addresses:
        try:
            return urllib3_connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError:
            failure = ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            )
        except OSError as error:
            failure = NewConnectionError(conn, f"Failed to establish a new connection: {error}")
    raise failure or NewConnectionError(conn, f"no address for {conn.host}")


def _guarded_adapter(guard: AddressGuard) -> HTTPAdapter:
    # Classes per adapter: urllib3 builds connections from a class, and the only per-pool
    # hook that does not disturb its pool keys is the class itself.
    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_socket(self, guard)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_socket(self, guard)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                "http": GuardedHTTPPool,
                "https": GuardedHTTPSPool,
            }

    return GuardedAdapter(max_retries=0)


# ---------------------------------------------------------------------------------------------
# The client


@dataclass(frozen=True, slots=True)
class ClientConfig:
    # host[:port] the address guard lets through although they resolve to internal addresses.
    allowed_registries: tuple[str, ...] = ()
    # host[:port] that may be reached over plain HTTP or TLS without verification.
    insecure_registries: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_retries: int = 2  # extra attempts after a 429/503
    max_retry_wait: float = 30.0  # a longer Retry-After fails now and tells the caller when
    user_agent: str = "imagestreams"
    ca_bundle: str | None = None  # extra trust for private registries; None = system CAs


@dataclass(frozen=True, slots=True)
class Repository:
    """One repository as an import sees it: where, as whom, and whether insecure is allowed."""

    registry: str  # as written in the reference: docker.io, quay.io, host:5000
    path: str  # library/mysql
    credential: Credential | None = None
    insecure: bool = False

    @property
    def name(self) -> str:
        return f"{canonical_registry(self.registry)}/{self.path}"


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str | None  # None when the registry sent no Docker-Content-Digest
    media_type: str
    size: int | None


ResponseHook = Callable[[str, str, int], None]  # (registry host, method, status; 0 = no answer)


class BodyStream(Protocol):
    """A request body streamed as it is read: `requests` sends `len()` as the Content-Length
    and `read()`s until b""."""

    def read(self, amount: int = -1, /) -> bytes: ...

    def __len__(self) -> int: ...


RequestBody = bytes | BodyStream
QueryParams = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Access:
    """What a request asks of the registry: the token scopes, and whether that is an
    import's pull of the repository (its error messages then speak of pull secrets and
    importPolicy.insecure; otherwise of the scopes and the secret)."""

    scopes: tuple[str, ...]
    import_pull: bool


def _shown(reference: str) -> str:
    return f"@{reference}" if ":" in reference else f":{reference}"


def manifest_head(response: requests.Response, repo: Repository, reference: str) -> ManifestHead:
    """The digest, media type and size a successful manifest HEAD answered with; the digest
    must be valid and, for a digest reference, the one asked for."""
    digest = response.headers.get("Docker-Content-Digest")
    if digest is not None and not is_valid_digest(digest):
        raise InternalError(
            f"registry {api_host(repo.registry)} sent an invalid digest {digest!r}"
            f" for {repo.name}{_shown(reference)}"
        )
    if digest and ":" in reference and digest != reference:
        raise DigestMismatch(
            f"registry {api_host(repo.registry)} answered {repo.name}@{reference}"
            f" with a manifest whose digest is {digest}"
        )
    length = response.headers.get("Content-Length", "")
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    return ManifestHead(digest, media_type, int(length) if length.isdigit() else None)


@dataclass(frozen=True, slots=True)
class _SendOptions:
    """How `_send` sends a request beyond method, URL and headers."""

    params: QueryParams | None = None
    data: RequestBody | None = None
    stream: bool = False
    replayable: bool = True  # False: a streamed body, sent once whatever the answer
    follow_redirects: bool = True


def _token_key(host: str, repo: Repository, access: _Access) -> tuple[str, str, str]:
    return (host, " ".join(access.scopes), _credential_key(repo.credential))


def _credential_key(credential: Credential | None) -> str:
    # Tokens are per identity; hash the password so the cache key holds no secret.
    if credential is None:
        return ""
    secret = hashlib.sha256(credential.password.encode()).hexdigest()[:16]
    return f"{credential.username}:{secret}"


def error_detail(response: requests.Response) -> str:
    """`: MANIFEST_UNKNOWN manifest unknown` from an OCI error body, or "" (for messages; reads
    at most 64 KiB of the body)."""
    try:
        # Read at most 64 KiB: an error body is advice, and a hostile one may be endless.
        head = next(response.iter_content(65536), b"")
        document = json.loads(head)
    except (ValueError, requests.RequestException, RuntimeError):
        return ""
    errors = document.get("errors") if isinstance(document, Mapping) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for item in errors[:3]:
        if isinstance(item, Mapping):
            parts.append(f"{item.get('code', '')} {item.get('message', '')}".strip())
    detail = "; ".join(part for part in parts if part)
    return f": {detail[:_ERROR_DETAIL_LIMIT]}" if detail else ""


def connection_problem(error: requests.RequestException) -> str:
    """A short, credential-free description of why no HTTP answer came."""
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        return "the TLS handshake failed (certificate not trusted or not TLS)"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "the connection timed out"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "it did not answer in time"
    if "Connection refused" in text:
        return "the connection was refused"
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "the host name does not resolve"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "the connection failed"
    return type(error).__name__


class RegistryClient:
    """A thread-safe client for many registries; keep one per controller and reuse it."""

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        resolver: Resolver = system_resolver,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_response: ResponseHook | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._on_response = on_response
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], Token] = {}
        self._challenges: dict[str, Challenge] = {}  # host → the scheme it asked for last
        self._schemes: dict[str, str] = {}  # insecure hosts: "https" or "http", once learnt
        self._session = requests.Session()
        # No proxies, .netrc or CA bundle from the environment: every connection must go
        # through the guarded adapter, and what is trusted is configuration, not ambient.
        self._session.trust_env = False
        self._session.headers["User-Agent"] = self.config.user_agent
        adapter = _guarded_adapter(AddressGuard(self.config.allowed_registries, resolver))
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public operations ------------------------------------------------------------------

    def head_manifest(self, repo: Repository, reference: str) -> ManifestHead:
        """The digest of `repo:reference` (a tag or a digest) without fetching the content."""
        path = f"/v2/{repo.path}/manifests/{reference}"
        response = self._request("HEAD", repo, path, {"Accept": ACCEPT_MANIFESTS})
        with response:
            self._raise_for_status(response, repo, reference)
            return manifest_head(response, repo, reference)

    def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        """Fetch and verify `repo:reference`: its digest is checked against the one asked for
        (a digest reference) or the one the registry advertised (a tag)."""
        path = f"/v2/{repo.path}/manifests/{reference}"
        response = self._request("GET", repo, path, {"Accept": ACCEPT_MANIFESTS}, stream=True)
        with response:
            self._raise_for_status(response, repo, reference)
            body = self._read_limited(response, repo, reference)
            advertised = response.headers.get("Docker-Content-Digest")
            content_type = response.headers.get("Content-Type")
        digest = self._verified_digest(body, repo, reference, advertised)
        return parse_manifest(body, content_type, digest)

    def resolve_digest(self, repo: Repository, reference: str) -> str:
        """HEAD, falling back to GET for registries that do not advertise digests."""
        head = self.head_manifest(repo, reference)
        if head.digest:
            return head.digest
        return self.get_manifest(repo, reference).digest

    # -- verification ---------------------------------------------------------------------

    def _verified_digest(
        self, body: bytes, repo: Repository, reference: str, advertised: str | None
    ) -> str:
        host = api_host(repo.registry)
        where = f"{repo.name}{_shown(reference)}"
        expected = reference if ":" in reference else advertised
        if advertised and expected != advertised:
            raise DigestMismatch(
                f"registry {host} answered {where} with a manifest it says is {advertised}"
            )
        if expected is None:
            return compute_digest(body)
        if not is_valid_digest(expected):
            raise InternalError(f"registry {host} sent an invalid digest {expected!r} for {where}")
        if not digest_matches(body, expected):
            actual = compute_digest(body, expected.split(":", 1)[0])
            raise DigestMismatch(
                f"the manifest registry {host} sent for {where} has digest {actual}, not"
                f" {expected}: the content was altered or the registry is broken; not importing"
            )
        return expected

    def _read_limited(self, response: requests.Response, repo: Repository, ref: str) -> bytes:
        limit = self.config.max_manifest_bytes
        too_big = InternalError(
            f"the manifest for {repo.name}{_shown(ref)} is larger than {limit} bytes; not importing"
        )
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise too_big
        chunks: list[bytes] = []
        received = 0
        try:
            for chunk in response.iter_content(65536):
                received += len(chunk)
                if received > limit:
                    raise too_big
                chunks.append(chunk)
        except requests.RequestException as error:
            raise InternalError(
                f"reading the manifest for {repo.name}{_shown(ref)} from registry"
                f" {api_host(repo.registry)} failed: {connection_problem(error)}"
            ) from None
        return b"".join(chunks)

    def _raise_for_status(self, response: requests.Response, repo: Repository, ref: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        host = api_host(repo.registry)
        where = f"{repo.name}{_shown(ref)}"
        detail = "" if response.request.method == "HEAD" else error_detail(response)
        answered = f"registry {host} answered HTTP {status}{detail}"
        if status == 404:
            what = "manifest" if ":" in ref else "tag"
            raise NotFound(f"{what} {where} not found ({answered})", status=status)
        if status == 401:
            raise Unauthorized(
                f"not authorized to pull {where} ({answered}); {self._credential_hint(repo)}",
                status=status,
            )
        if status == 403:
            raise Forbidden(
                f"access to {where} is denied ({answered}); {self._credential_hint(repo)}",
                status=status,
            )
        retry_after = None
        if status in (429, 503):
            retry_after = self._retry_after(response)
            later = f", retry after {retry_after:.0f}s" if retry_after is not None else ""
            raise InternalError(
                f"registry {host} is rate limiting or unavailable for {where} ({answered}{later})",
                status=status,
                retry_after=retry_after,
            )
        raise InternalError(f"fetching {where} failed ({answered})", status=status)

    @staticmethod
    def _credential_hint(repo: Repository) -> str:
        registry = canonical_registry(repo.registry)
        if repo.credential is None:
            return (
                f"no credentials were sent: the repository may not exist, or it needs a pull"
                f" secret for {registry} in the image stream's namespace"
            )
        return f"the credentials from {repo.credential.source or 'a pull secret'} were used"

    # -- requests with auth and retries -----------------------------------------------------
    #
    # The one request path, for this client's pulls and for subclasses (`blobs.BlobClient`
    # sends its blob reads, uploads, mounts and manifest writes through `_request` too): the
    # challenge each registry sent last and the tokens per (registry, scopes, identity) are
    # shared by all of them.

    def _insecure(self, repo: Repository) -> bool:
        return repo.insecure or host_in(api_host(repo.registry), self.config.insecure_registries)

    def _retry_after(self, response: requests.Response) -> float | None:
        """The seconds a response's `Retry-After` asks to wait, or None."""
        return parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())

    def _request(
        self,
        method: str,
        repo: Repository,
        target: str,
        headers: Mapping[str, str] | None = None,
        *,
        scopes: Sequence[str] | None = None,
        params: QueryParams | None = None,
        data: RequestBody | None = None,
        stream: bool = False,
        replayable: bool = True,
        follow_redirects: bool = True,
    ) -> requests.Response:
        """Send one request to `repo`'s registry with the authorization it asks for; the
        answer is returned whatever its status, for the caller to map to an error.

        `target` is a path (`/v2/…`), sent over HTTPS, or for an insecure registry over the
        scheme learnt for it, else HTTPS and then HTTP; or an absolute URL (an upload's
        Location), sent as it is, with the Authorization header only on the registry's own
        host. `scopes` are the token scopes to ask for; None is an import's pull of `repo`.
        A 401 with a new challenge is answered and the request sent again once; a 429/503 is
        sent again as its Retry-After asks, a bounded number of times. A request whose body
        is a stream is not `replayable`: it is sent once, 401 and 429 included. No answer at
        all raises InternalError.
        """
        host = api_host(repo.registry)
        insecure = self._insecure(repo)
        if scopes is None:
            access = _Access((pull_scope(repo.path),), import_pull=True)
        else:
            access = _Access(tuple(scopes), import_pull=False)
        options = _SendOptions(params, data, stream, replayable, follow_redirects)
        if "://" in target:
            urls = [target]
        else:
            learnt = None
            if insecure:
                # Only an insecure request may use what an insecure request learnt: a stream
                # without importPolicy.insecure must never be downgraded to HTTP by another's.
                with self._lock:
                    learnt = self._schemes.get(host)
            schemes = [learnt] if learnt else (["https", "http"] if insecure else ["https"])
            urls = [f"{scheme}://{host}{target}" for scheme in schemes]
        failure: requests.RequestException | None = None
        for url in urls:
            try:
                response = self._authorized_send(
                    method, url, repo, access, headers or {}, insecure, options
                )
            except requests.RequestException as error:
                failure = error
                continue
            if insecure and "://" not in target:
                with self._lock:
                    self._schemes[host] = url.split("://", 1)[0]
            return response
        assert failure is not None
        if not access.import_pull:
            raise InternalError(
                f"{method} to registry {host} for {repo.name} failed: {connection_problem(failure)}"
            ) from None
        hint = ""
        if isinstance(failure, requests.exceptions.SSLError) and not insecure:
            hint = " (a verified TLS certificate is required unless importPolicy.insecure is set)"
        raise InternalError(
            f"could not reach registry {host} for {repo.name}: {connection_problem(failure)}{hint}"
        ) from None

    def _probed_url(self, repo: Repository, path: str) -> str:
        """The absolute URL of `path` on `repo`'s registry, for requests that should not be
        tried on a guessed scheme (writes): https, or for an insecure registry whichever of
        https and http answers an anonymous `GET /v2/` (learnt once per host; the challenge
        that answer carries is remembered, so the first write goes out authorized)."""
        host = api_host(repo.registry)
        if not self._insecure(repo):
            return f"https://{host}{path}"
        with self._lock:
            learnt = self._schemes.get(host)
        if learnt is not None:
            return f"{learnt}://{host}{path}"
        probe = _SendOptions(follow_redirects=False)
        failure: requests.RequestException | None = None
        for scheme in ("https", "http"):
            try:
                response = self._send("GET", f"{scheme}://{host}/v2/", {}, None, True, probe)
            except requests.RequestException as error:
                failure = error
                continue
            with response:
                challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
            with self._lock:
                self._schemes[host] = scheme
                known = {c.scheme: c for c in challenges if c.scheme in ("bearer", "basic")}
                if known:
                    self._challenges[host] = known.get("bearer") or known["basic"]
            return f"{scheme}://{host}{path}"
        assert failure is not None
        raise InternalError(
            f"could not reach registry {host} for {repo.name}: {connection_problem(failure)}"
        )

    def _authorized_send(
        self,
        method: str,
        url: str,
        repo: Repository,
        access: _Access,
        headers: Mapping[str, str],
        insecure: bool,
        options: _SendOptions,
    ) -> requests.Response:
        host = api_host(repo.registry)
        same_host = urllib.parse.urlsplit(url).netloc.lower() == host.lower()
        authorization = self._known_authorization(host, repo, access, insecure)
        sent = authorization if same_host else None
        response = self._send(method, url, headers, sent, insecure, options)
        if response.status_code != 401 or not options.replayable or not same_host:
            return response
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        fresh = self._answer_challenge(host, repo, access, challenges, insecure)
        if fresh is None or fresh == authorization:
            return response  # nothing new to try: the 401 stands
        response.close()
        return self._send(method, url, headers, fresh, insecure, options)

    def _known_authorization(
        self, host: str, repo: Repository, access: _Access, insecure: bool
    ) -> str | None:
        """Authorization to send up front for a registry whose challenge we already know, so
        a HEAD with a live token costs one request instead of a 401 round trip."""
        key = _token_key(host, repo, access)
        with self._lock:
            challenge = self._challenges.get(host)
            token = self._tokens.get(key)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic(repo.credential)
        if token is None or token.expires_at <= self._monotonic():
            token = self._fetch_token(host, repo, access, challenge, insecure)
        return f"Bearer {token.value}"

    @staticmethod
    def _basic(credential: Credential | None) -> str | None:
        if credential is None:
            return None
        pair = f"{credential.username}:{credential.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _answer_challenge(
        self,
        host: str,
        repo: Repository,
        access: _Access,
        challenges: Sequence[Challenge],
        insecure: bool,
    ) -> str | None:
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            challenge = by_scheme["bearer"]
            with self._lock:
                self._challenges[host] = challenge
            token = self._fetch_token(host, repo, access, challenge, insecure)
            return f"Bearer {token.value}"
        if "basic" in by_scheme:
            with self._lock:
                self._challenges[host] = by_scheme["basic"]
            return self._basic(repo.credential)
        return None

    def _fetch_token(
        self, host: str, repo: Repository, access: _Access, challenge: Challenge, insecure: bool
    ) -> Token:
        realm, params = token_query(challenge, access.scopes)
        if realm.startswith("http://") and repo.credential is not None and not insecure:
            hint = (
                " (set importPolicy.insecure only if you trust that network)"
                if access.import_pull
                else ""
            )
            raise InternalError(
                f"registry {host} asks for credentials to be sent over plain HTTP to {realm};"
                f" refusing{hint}"
            )
        authorization = self._basic(repo.credential)
        try:
            response = self._send(
                "GET", realm, {}, authorization, insecure, _SendOptions(params=params)
            )
        except requests.RequestException as error:
            raise InternalError(
                f"could not reach the token server {realm} of registry {host}:"
                f" {connection_problem(error)}"
            ) from None
        with response:
            if response.status_code in (401, 403):
                secret = "a pull secret" if access.import_pull else "a secret"
                who = (
                    f"the credentials from {repo.credential.source or secret}"
                    if repo.credential
                    else "anonymous access"
                )
                asked = (
                    f"to {repo.name}" if access.import_pull else f"for {' '.join(access.scopes)}"
                )
                error_type = Unauthorized if response.status_code == 401 else Forbidden
                raise error_type(
                    f"the token server of registry {host} refused {who} {asked}"
                    f" (HTTP {response.status_code})",
                    status=response.status_code,
                )
            if response.status_code != 200:
                raise InternalError(
                    f"the token server of registry {host} answered HTTP {response.status_code}",
                    status=response.status_code,
                )
            try:
                body = response.json()
            except ValueError:
                body = None
        now = self._monotonic()
        token = parse_token_response(body, now)
        with self._lock:
            if len(self._tokens) >= _TOKEN_CACHE_PRUNE_AT:
                # One token per repository and identity adds up over thousands of streams.
                self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
            self._tokens[_token_key(host, repo, access)] = token
        return token

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        authorization: str | None,
        insecure: bool,
        options: _SendOptions,
    ) -> requests.Response:
        """One request, repeated after a 429/503 as the server's Retry-After asks (bounded),
        unless it is not replayable."""
        all_headers = dict(headers)
        if authorization:
            all_headers["Authorization"] = authorization
        verify: bool | str = self.config.ca_bundle or True
        if insecure:
            verify = False
        host = urllib3.util.parse_url(url).netloc or ""
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=all_headers,
                    params=options.params,
                    data=options.data,
                    stream=options.stream,
                    verify=verify,
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                    allow_redirects=options.follow_redirects,
                )
            except requests.RequestException:
                self._report(host, method, 0)
                raise
            self._report(host, method, response.status_code)
            if (
                response.status_code not in (429, 503)
                or not options.replayable
                or attempt >= self.config.max_retries
            ):
                return response
            wait = self._retry_after(response)
            if wait is None:
                wait = min(2.0**attempt, self.config.max_retry_wait)  # 1 s, 2 s, 4 s …
            if wait > self.config.max_retry_wait:
                return response  # too long to hold a worker; the error carries retry_after
            log.info("registry %s answered %s; retrying in %.1fs", host, response.status_code, wait)
            response.close()
            self._sleep(wait)
            attempt += 1

    def _report(self, host: str, method: str, status: int) -> None:
        """Called once for every request sent (`status` 0: no answer came), token requests
        and retries included: the place for a subclass to count requests."""
        if self._on_response is not None:
            try:
                self._on_response(host, method, status)
            except Exception:  # a metrics hook must never fail an import
                log.exception("registry response hook failed")
