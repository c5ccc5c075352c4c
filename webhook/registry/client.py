"""The OCI distribution API v2 client: manifests by tag or digest, with registry auth.

What an import needs and nothing more: HEAD a manifest for its digest (cheap, and Docker Hub
does not count it against the pull limit), GET it when the content matters (an index's
platforms), with

- auth from the `WWW-Authenticate` challenge (`auth`): anonymous or basic-auth bearer tokens
  fetched from the challenge's realm for `repository:NAME:pull`, reused per (registry, scope,
  credential) until they expire; or HTTP basic auth when the registry asks for it;
- the digest of every fetched manifest verified against the digest asked for or advertised,
  and a size limit, so a registry (or anything between) cannot hand over other content;
- connect/read timeouts, and `Retry-After` honoured on 429/503 a bounded number of times;
- every body read whole held to a size limit and the read timeout, redirects followed here a
  bounded number of times without reading their bodies (`bodies`): what a registry answers
  costs bounded memory and time, whatever it sends;
- HTTPS with verified certificates (the default roots plus the operator's CA files) unless
  the caller says insecure (`importPolicy.insecure`) or the operator listed the registry as
  insecure;
- the operator's HTTP(S) proxies (`proxies`), and no others;
- the address guard (`guard`) on every connection it opens.

`RegistryClient.request` is the one request path, public for `blobs.BlobClient`'s reads,
uploads and manifest writes: the challenge each registry sent last and the tokens are shared
by all of them. Errors are the typed ones of `errors`; credentials never reach a message or a
log line. The parsing lives in the pure modules (`auth`, `manifests`, `guard`); this is the
thin HTTP edge.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import requests
import urllib3

from webhook.model.reference import is_valid_digest
from webhook.registry.auth import (
    Challenge,
    Token,
    parse_challenges,
    parse_retry_after,
    parse_token_response,
    pull_scope,
    token_query,
)
from webhook.registry.bodies import TooLarge, TooSlow, content_length, read_limited
from webhook.registry.credentials import Credential, canonical_registry, identity
from webhook.registry.errors import (
    DigestMismatch,
    Forbidden,
    InternalError,
    NotFound,
    RegistryError,
    Timeout,
    TLSHandshakeFailed,
    Unauthorized,
    Unreachable,
    for_status,
)
from webhook.registry.guard import (
    AddressGuard,
    Resolver,
    api_host,
    guarded_adapter,
    host_in,
    system_resolver,
    trust_context,
)
from webhook.registry.manifests import (
    ACCEPT_MANIFESTS,
    Manifest,
    compute_digest,
    digest_matches,
    parse_manifest,
)
from webhook.registry.proxies import ProxyConfig

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the limit the distribution registry itself enforces
# Other bodies read whole (token answers, `/v2/` probes, errors, upload answers) are small.
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REDIRECTS = 10  # requests' default of 30 is a lot of connections for one request
_DEFAULT_PORTS = {"https": 443, "http": 80}
_ERROR_BODY_LIMIT = 65536  # an error body is advice: read no more of it
_ERROR_DETAIL_LIMIT = 300
_TOKEN_CACHE_PRUNE_AT = 4096
# A URL prepare() leaves as it is: scheme, a lowercase ASCII host, a port (checked to be at
# most 65535 by `_plain`) and a path of characters that need no quoting and no dot segments
# (an upload Location, with its query, goes the long way).
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_PLAIN_URL = re.compile(
    rf"https?://(?:{_LABEL}\.)*{_LABEL}(?::([1-9][0-9]{{0,4}}))?"
    r"(?!.*/\.\.?(?:/|\Z))/[A-Za-z0-9._~/:@+-]*\Z"
)
# OpenSSL's reason in a failed verification: "self-signed certificate in certificate chain".
_UNTRUSTED = re.compile(r"certificate verify failed: ([^(')\]]+?)\s*[(')\]]")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    # host[:port] the address guard lets through although they resolve to internal addresses.
    allowed_registries: tuple[str, ...] = ()
    # host[:port] that may be reached over plain HTTP or TLS without verification.
    insecure_registries: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    # The most a registry may take to send a response's headers, and again a body that is
    # read whole: in all, not per read (a registry can drip a byte per second forever).
    read_timeout: float = 30.0
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_redirects: int = MAX_REDIRECTS
    max_retries: int = 2  # extra attempts after a 429/503
    max_retry_wait: float = 30.0  # a longer Retry-After fails now and tells the caller when
    user_agent: str = "imagestreams"
    # PEM files of CAs trusted for registry TLS besides the default roots (private CAs).
    ca_files: tuple[str, ...] = ()
    # The operator's HTTP(S) proxies; the address guard still judges the registry behind them.
    proxies: ProxyConfig | None = None
    # Connections kept alive per registry host: at least as many as requests run at once
    # (the import workers), or those beyond are closed after each request and the next
    # one dials (and for HTTPS handshakes) again. And how many hosts keep theirs.
    connections_per_host: int = 32
    hosts_kept_alive: int = 64


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


def _plain(url: str) -> bool:
    """Whether prepare() would leave `url` exactly as it is (`_PLAIN_URL`)."""
    match = _PLAIN_URL.match(url)
    return match is not None and int(match[1] or 0) <= 65535


def _shown(reference: str) -> str:
    return f"@{reference}" if ":" in reference else f":{reference}"


def _same_origin(url: str, other: str) -> bool:
    """Whether `other` is on the same scheme, host and port as `url` (where credentials
    meant for `url` may go)."""

    def origin(parts: urllib.parse.SplitResult) -> tuple[str, str | None, int | None]:
        return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)

    return origin(urllib.parse.urlsplit(url)) == origin(urllib.parse.urlsplit(other))


def _without_query(url: str) -> str:
    """A URL for a message: an upload location's query holds the registry's upload state."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


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
    length = content_length(response.headers.get("Content-Length"))
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    return ManifestHead(digest, media_type, length)


@dataclass(frozen=True, slots=True)
class _SendOptions:
    """How `_send` sends a request beyond method, URL and headers."""

    params: QueryParams | None = None
    data: RequestBody | None = None
    stream: bool = False
    replayable: bool = True  # False: a streamed body, sent once whatever the answer
    follow_redirects: bool = True


def _token_key(host: str, repo: Repository, access: _Access) -> tuple[str, str, str]:
    return (host, " ".join(access.scopes), identity(repo.credential))


def error_detail(response: requests.Response, seconds: float) -> str:
    """`: MANIFEST_UNKNOWN manifest unknown` from an OCI error body, or "" (for messages; reads
    at most 64 KiB of the body, for at most `seconds`)."""
    try:
        # An error body is advice, and a hostile one may be endless or never end.
        document = json.loads(read_limited(response, _ERROR_BODY_LIMIT, seconds))
    except (ValueError, requests.RequestException, RuntimeError, TooLarge, TooSlow):
        return ""  # RuntimeError: RecursionError, from JSON nested too deep
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
        if match := _UNTRUSTED.search(text):
            # A private CA: say so, and how to trust it (the controller's flag).
            return (
                f"its TLS certificate is not trusted ({match[1]}); if the registry uses a"
                " private CA, give it to the controller with --registry-ca-file"
            )
        return "the TLS handshake failed (certificate not trusted or not TLS)"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "the connection timed out"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "it did not answer in time"
    if isinstance(error, requests.exceptions.TooManyRedirects):
        return f"it redirected more than {MAX_REDIRECTS} times"
    if "Connection refused" in text:
        return "the connection was refused"
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "the host name does not resolve"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "the connection failed"
    return type(error).__name__


def connection_error(message: str, error: requests.RequestException) -> RegistryError:
    """The typed error for a request that got no answer, `message` already saying why
    (`connection_problem`): a deadline that passed is a Timeout, a failed TLS handshake is
    TLSHandshakeFailed (the registry is there; our trust or its certificate is wrong),
    anything else Unreachable. Too many redirects is an answer, just a bad one."""
    if isinstance(error, requests.exceptions.Timeout):  # ConnectTimeout and ReadTimeout
        return Timeout(message)
    if isinstance(error, requests.exceptions.SSLError):
        return TLSHandshakeFailed(message)
    if isinstance(error, requests.exceptions.TooManyRedirects):
        return InternalError(message)
    return Unreachable(message)


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
        proxies = self.config.proxies
        guard = AddressGuard(
            self.config.allowed_registries, resolver, proxies.urls if proxies else ()
        )
        adapter = guarded_adapter(
            guard,
            proxies,
            trust_context(self.config.ca_files),
            hosts=self.config.hosts_kept_alive,
            per_host=self.config.connections_per_host,
        )
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
        response = self.request("HEAD", repo, path, {"Accept": ACCEPT_MANIFESTS})
        with response:
            self._raise_for_status(response, repo, reference)
            return manifest_head(response, repo, reference)

    def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        """Fetch and verify `repo:reference`: its digest is checked against the one asked for
        (a digest reference) or the one the registry advertised (a tag)."""
        path = f"/v2/{repo.path}/manifests/{reference}"
        response = self.request("GET", repo, path, {"Accept": ACCEPT_MANIFESTS}, stream=True)
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
        where = f"the manifest for {repo.name}{_shown(ref)}"
        host = api_host(repo.registry)
        length = content_length(response.headers.get("Content-Length"))
        try:
            if length is not None and length > limit:
                raise TooLarge()
            return read_limited(response, limit, self.config.read_timeout)
        except TooLarge:
            raise InternalError(f"{where} is larger than {limit} bytes; not importing") from None
        except TooSlow:
            raise Timeout(
                f"registry {host} took longer than {self.config.read_timeout:.0f}s to send {where}"
            ) from None
        except requests.RequestException as error:
            raise connection_error(
                f"reading {where} from registry {host} failed: {connection_problem(error)}", error
            ) from None

    def _raise_for_status(self, response: requests.Response, repo: Repository, ref: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        host = api_host(repo.registry)
        where = f"{repo.name}{_shown(ref)}"
        if response.request.method == "HEAD":
            detail = ""
        else:
            detail = error_detail(response, self.config.read_timeout)
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
        if status in (429, 503):
            retry_after = self.retry_after(response)
            later = f", retry after {retry_after:.0f}s" if retry_after is not None else ""
            raise for_status(status)(
                f"registry {host} is rate limiting or unavailable for {where} ({answered}{later})",
                status=status,
                retry_after=retry_after,
            )
        raise for_status(status)(f"fetching {where} failed ({answered})", status=status)

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
    # The one request path, public for the other operations on registries (`blobs.BlobClient`
    # sends its blob reads, uploads, mounts and manifest writes through `request`, writes to
    # the `probed_url`): the challenge each registry sent last and the tokens per (registry,
    # scopes, identity) are shared by all of them.

    def _insecure(self, repo: Repository) -> bool:
        return repo.insecure or host_in(api_host(repo.registry), self.config.insecure_registries)

    def retry_after(self, response: requests.Response) -> float | None:
        """The seconds a response's `Retry-After` asks to wait, or None."""
        return parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())

    def request(
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
            raise connection_error(
                f"{method} to registry {host} for {repo.name} failed:"
                f" {connection_problem(failure)}",
                failure,
            ) from None
        hint = ""
        if isinstance(failure, requests.exceptions.SSLError) and not insecure:
            hint = " (a verified TLS certificate is required unless importPolicy.insecure is set)"
        raise connection_error(
            f"could not reach registry {host} for {repo.name}: {connection_problem(failure)}{hint}",
            failure,
        ) from None

    def probed_url(self, repo: Repository, path: str) -> str:
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
        raise connection_error(
            f"could not reach registry {host} for {repo.name}: {connection_problem(failure)}",
            failure,
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
            raise connection_error(
                f"could not reach the token server {realm} of registry {host}:"
                f" {connection_problem(error)}",
                error,
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
                # Throttled or down is said as such; any other answer (a 404 is not "the
                # image is not found") is the token server's own fault.
                status = response.status_code
                failed: type[RegistryError] = InternalError
                if status == 429 or status >= 500:
                    failed = for_status(status)
                raise failed(
                    f"the token server of registry {host} answered HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after=self.retry_after(response),
                )
            try:
                body = json.loads(response.content)
            except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
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
        verify = not insecure  # the trust itself is the adapter's (ClientConfig.ca_files)
        host = urllib3.util.parse_url(url).netloc or ""
        attempt = 0
        while True:
            response = self._exchange(method, url, all_headers, verify, options)
            if (
                response.status_code not in (429, 503)
                or not options.replayable
                or attempt >= self.config.max_retries
            ):
                return response
            wait = self.retry_after(response)
            if wait is None:
                wait = min(2.0**attempt, self.config.max_retry_wait)  # 1 s, 2 s, 4 s …
            if wait > self.config.max_retry_wait:
                return response  # too long to hold a worker; the error carries retry_after
            log.info("registry %s answered %s; retrying in %.1fs", host, response.status_code, wait)
            response.close()
            self._sleep(wait)
            attempt += 1

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        verify: bool,
        options: _SendOptions,
    ) -> requests.Response:
        """Send one request, follow its redirects, and read its body unless it is streamed.

        Sent through the adapter rather than `Session.send`, which reads the body of every
        redirect whole, however large, even when asked not to follow it. Redirects are
        followed for GET and HEAD only, at most `max_redirects` of them, without reading
        their bodies, and without the Authorization header once they leave the host."""
        params = options.params
        for _ in range(self.config.max_redirects + 1):
            prepared = self._prepare(method, url, headers, params, options.data)
            host = urllib3.util.parse_url(url).netloc or ""
            try:
                response = self._session.get_adapter(url).send(
                    prepared,
                    stream=True,
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                    verify=verify,
                    proxies={},  # the adapter applies the configured proxies, and only those
                )
            except requests.RequestException:
                self._report(host, method, 0)
                raise
            self._report(host, method, response.status_code)
            target = None
            if options.follow_redirects and method in ("GET", "HEAD"):
                target = self._session.get_redirect_target(response)
            if not target:
                if method == "HEAD":
                    # No body follows a HEAD's headers (http.client reads none); urllib3's
                    # read of it returns b"" and puts the connection back in the pool,
                    # without the watchdog and chunk loop a body needs.
                    response.raw.read()
                    response._content = b""
                elif not options.stream:
                    self._read_body(response, method, host)
                return response
            response.close()
            next_url = urllib.parse.urljoin(response.url, target)
            if not _same_origin(url, next_url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url, params = next_url, None
        raise requests.TooManyRedirects(f"more than {self.config.max_redirects} redirects")

    def _prepare(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: QueryParams | None,
        data: RequestBody | None,
    ) -> requests.PreparedRequest:
        """The request `Session.prepare_request` would build, without its merging of the
        session's cookie jar, auth and environment, which cost a quarter of a manifest
        HEAD's CPU and add nothing here: the jar stays empty (responses never pass through
        `Session.send`), there is no session auth, and `trust_env` is off."""
        merged = requests.structures.CaseInsensitiveDict(self._session.headers)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        if method in ("GET", "HEAD") and params is None and data is None and _plain(url):
            # What prepare() would make of a URL with nothing to quote or encode (every
            # manifest and token URL we build: the reference grammar allows no more), for a
            # fifth of a manifest HEAD's CPU less: no URL parsing, requoting or body.
            prepared.method, prepared.url = method, url
            prepared.prepare_headers(merged)  # header validity is still checked
            prepared.hooks = requests.hooks.default_hooks()
            return prepared
        prepared.prepare(
            method=method,
            url=url,
            headers=merged,
            params=params,
            data=data,
            hooks=requests.hooks.default_hooks(),
        )
        return prepared

    def _read_body(self, response: requests.Response, method: str, host: str) -> None:
        """Read a body that is not streamed, within the limits, and keep it as the response's
        content, as requests does when it reads one (the connection goes back to the pool:
        the body was read to its end)."""
        limit = self.config.max_response_bytes
        what = f"its answer to {method} {_without_query(response.url)}"
        try:
            body = read_limited(response, limit, self.config.read_timeout)
        except TooLarge:
            raise InternalError(
                f"registry {host} sent more than {limit} bytes in {what}; not reading it"
            ) from None
        except TooSlow:
            raise Timeout(
                f"registry {host} took longer than {self.config.read_timeout:.0f}s to send {what}"
            ) from None
        response._content = body

    def _report(self, host: str, method: str, status: int) -> None:
        """Called once for every request sent (`status` 0: no answer came), token requests
        and retries included: the place for a subclass to count requests."""
        if self._on_response is not None:
            try:
                self._on_response(host, method, status)
            except Exception:  # a metrics hook must never fail an import
                log.exception("registry response hook failed")
