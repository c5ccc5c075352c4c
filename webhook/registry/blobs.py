"""Blobs and pushes over the OCI distribution API, on `RegistryClient`'s session and auth.

`BlobClient` is a `RegistryClient` (same session, address guard, TLS rules, challenge memory,
token cache and `on_response` hook) that can also

- HEAD a blob or a manifest with a token for any scope (a push uses one token for
  `repository:NAME:pull,push`; a mount adds `repository:FROM:pull`);
- GET a blob as a stream (`open_blob`): never held whole in memory, its size and digest
  checked on the way, and the check made *before* the last bytes are handed on, so a
  corrupt or substituted blob cannot complete an upload it is being piped into;
- upload a blob monolithically (POST, then one streamed PUT with a Content-Length) or in
  chunks (POST, PATCHes with Content-Range, an empty PUT), after a cross-repository mount
  attempt when the caller knows another repository of the registry holding it
  (`POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=REPO`: 201 mounted, 202 an upload session
  to use instead);
- PUT and DELETE manifests.

Every request goes through the base client's one request path, `RegistryClient.request`,
with the token scopes it needs. Requests with a streamed body are sent once (a stream cannot
be replayed): they carry the authorization learnt by the bodiless request that opened the
upload, and a 401 or 429 on them is an error for the caller to retry as a whole. Bodiless
requests and manifest PUTs get the 401 challenge round trip and the bounded 429/503 retries
that the base client's requests get.

`counting()` tallies the requests the current thread sends, by host and method, so a copy
can report what it cost without counting other threads' imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from webhook.model.reference import is_valid_digest
from webhook.registry.auth import repository_scope
from webhook.registry.bodies import content_length
from webhook.registry.client import (
    ManifestHead,
    QueryParams,
    RegistryClient,
    Repository,
    RequestBody,
    connection_error,
    connection_problem,
    error_detail,
    manifest_head,
)
from webhook.registry.errors import (
    DigestMismatch,
    Forbidden,
    InternalError,
    NotFound,
    RegistryError,
    Unauthorized,
)
from webhook.registry.guard import api_host
from webhook.registry.manifests import ACCEPT_MANIFESTS, compute_digest

PULL = "pull"
PUSH = "pull,push"
DELETE = "delete"  # what distribution (and Harbor) ask of a token for DELETE
READ_CHUNK = 1024 * 1024  # what one read from the source asks for
MONOLITHIC = None  # chunk_size meaning "one PUT"


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query (an upload location already carries state)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclass(frozen=True, slots=True)
class UploadSession:
    """An open blob upload: where the next PATCH or the final PUT goes."""

    repo: Repository
    location: str  # absolute URL
    offset: int = 0


class VerifiedBlob:
    """A blob being read from a registry, checked as it goes.

    A file-like object with a length, so `requests` sends it with a Content-Length and
    urllib3 streams it by `read()`: the source and the destination move in step and the
    blob is never whole in memory. The size and digest are checked when the last byte
    arrives from the source, before that byte is returned: a mismatch raises out of the
    upload that is reading it, so the upload never completes.

    `greedy`: `read(n)` may return up to a whole source chunk (1 MiB) although n is smaller.
    urllib3 reads a body 16 KiB at a time and sends whatever it gets; handing it the
    chunks as they came saves a copy and a system call for every 16 KiB.
    """

    def __init__(self, chunks: Iterator[bytes], digest: str, size: int, where: str) -> None:
        algorithm, _, _ = digest.partition(":")
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise InternalError(f"unsupported digest algorithm in {digest!r} ({where})")
        self.digest = digest
        self.size = size
        self.received = 0
        self._where = where
        self._hasher = hashlib.new(algorithm)
        self._chunks = chunks
        self._chunk = b""
        self._offset = 0
        self._verified = False
        self.greedy = False

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(READ_CHUNK):
            yield chunk

    def read(self, amount: int = -1) -> bytes:
        if self._offset >= len(self._chunk):
            self._fill()
        left = len(self._chunk) - self._offset
        if left <= 0:
            return b""
        if amount is None or amount < 0 or (self.greedy and amount < READ_CHUNK):
            amount = left
        if self._offset == 0 and amount >= left:
            self._offset = left
            return self._chunk
        piece = self._chunk[self._offset : self._offset + amount]
        self._offset += len(piece)
        return piece

    def _fill(self) -> None:
        if self._verified:
            return
        try:
            chunk = next(self._chunks, b"")
        except requests.RequestException as error:
            raise connection_error(
                f"reading blob {self.digest} from {self._where} failed:"
                f" {connection_problem(error)}",
                error,
            ) from None
        if not chunk:
            if self.received < self.size:
                raise DigestMismatch(
                    f"blob {self.digest} from {self._where} ended after {self.received} of"
                    f" {self.size} bytes"
                )
            self._verify()
            return
        self.received += len(chunk)
        if self.received > self.size:
            raise DigestMismatch(
                f"blob {self.digest} from {self._where} is larger than the {self.size} bytes"
                " its descriptor says"
            )
        self._hasher.update(chunk)
        if self.received == self.size:
            self._verify()
            trailing = next(self._chunks, b"")
            if trailing:
                raise DigestMismatch(
                    f"blob {self.digest} from {self._where} is larger than the {self.size}"
                    " bytes its descriptor says"
                )
        self._chunk, self._offset = chunk, 0

    def _verify(self) -> None:
        actual = f"{self._hasher.name}:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatch(
                f"blob {self.digest} from {self._where} has digest {actual}: the content was"
                " altered or the registry is broken; not copying it"
            )
        self._verified = True

    def slice(self, length: int) -> _Slice:
        """The next `length` bytes as their own file-like object (one PATCH of a chunked
        upload)."""
        return _Slice(self, length)


class _Slice:
    def __init__(self, blob: VerifiedBlob, length: int) -> None:
        self._blob = blob
        self._left = length
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(READ_CHUNK):
            yield chunk

    def read(self, amount: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        # Greedy within the slice, for the same reason as VerifiedBlob.greedy.
        data = self._blob.read(
            self._left if amount is None or amount < 0 else min(max(amount, READ_CHUNK), self._left)
        )
        self._left -= len(data)
        return data


@dataclass
class RequestTally:
    """Requests the current thread sent, by (host, method) and by host."""

    by_method: Counter[tuple[str, str]]

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    def by_host(self) -> dict[str, int]:
        hosts: Counter[str] = Counter()
        for (host, _), count in self.by_method.items():
            hosts[host] += count
        return dict(hosts)


class BlobClient(RegistryClient):
    """`RegistryClient` plus blob reads, uploads, mounts and manifest writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    def __enter__(self) -> BlobClient:
        return self

    # -- counting ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """Count the requests this thread sends inside the block (nested blocks both count)."""
        tally = RequestTally(Counter())
        stack: list[RequestTally] = getattr(self._local, "tallies", [])
        self._local.tallies = [*stack, tally]
        try:
            yield tally
        finally:
            self._local.tallies = stack

    def _report(self, host: str, method: str, status: int) -> None:
        for tally in getattr(self._local, "tallies", ()):
            tally.by_method[(host, method)] += 1
        super()._report(host, method, status)

    # -- reads ------------------------------------------------------------------------------

    def head_blob(self, repo: Repository, digest: str, *, actions: str = PULL) -> int | None:
        """The size of blob `digest` in `repo`, or None when the repository does not hold it."""
        response = self._scoped("HEAD", repo, f"/v2/{repo.path}/blobs/{digest}", actions=actions)
        with response:
            if response.status_code == 404:
                return None
            self._check(response, repo, f"blob {digest}", actions)
            length = content_length(response.headers.get("Content-Length"))
            return -1 if length is None else length

    def head_manifest_as(
        self, repo: Repository, reference: str, *, actions: str = PULL
    ) -> ManifestHead | None:
        """`head_manifest` with a token for `actions` (one token per push), None for 404."""
        response = self._scoped(
            "HEAD",
            repo,
            f"/v2/{repo.path}/manifests/{reference}",
            actions=actions,
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        with response:
            if response.status_code == 404:
                return None
            self._check(response, repo, f"manifest {reference}", actions)
            return manifest_head(response, repo, reference)

    @contextlib.contextmanager
    def open_blob(self, repo: Repository, digest: str, size: int) -> Iterator[VerifiedBlob]:
        """Blob `digest` of `repo` as a `VerifiedBlob` (redirects to storage are followed;
        the Authorization header is not sent to another host)."""
        if not is_valid_digest(digest):
            raise InternalError(f"invalid blob digest {digest!r} for {repo.name}")
        path = f"/v2/{repo.path}/blobs/{digest}"
        response = self.request("GET", repo, path, {}, stream=True)
        with response:
            self._check(response, repo, f"blob {digest}", PULL)
            yield VerifiedBlob(
                response.iter_content(READ_CHUNK), digest, size, f"registry {repo.name}"
            )

    # -- uploads ----------------------------------------------------------------------------

    def start_upload(
        self, repo: Repository, *, mount: str | None = None, mount_from: str | None = None
    ) -> UploadSession | None:
        """Open an upload session in `repo`; with `mount`/`mount_from`, first ask the registry
        to mount blob `mount` from repository `mount_from` (same registry). None means the
        blob was mounted: nothing to upload."""
        params: dict[str, str] = {}
        scopes = [repository_scope(repo.path, PUSH)]
        if mount and mount_from:
            params = {"mount": mount, "from": mount_from}
            scopes.append(repository_scope(mount_from, PULL))
        response = self._scoped(
            "POST",
            repo,
            f"/v2/{repo.path}/blobs/uploads/",
            scopes=scopes,
            params=params,
            headers={"Content-Length": "0"},
        )
        with response:
            if response.status_code == 201 and mount:
                return None
            self._check(response, repo, "a blob upload", PUSH)
            if response.status_code != 202:
                raise InternalError(
                    f"registry {api_host(repo.registry)} answered a blob upload to {repo.name}"
                    f" with HTTP {response.status_code}, not 202"
                )
            return UploadSession(repo, self._location(response, repo))

    def upload(
        self,
        session: UploadSession,
        blob: VerifiedBlob,
        *,
        chunk_size: int | None = MONOLITHIC,
    ) -> None:
        """Send `blob` into `session` and commit it under its digest.

        Monolithic (the default): one PUT with the whole stream. Chunked: PATCHes of
        `chunk_size` bytes with Content-Range, then a PUT without a body, for registries
        or proxies that cap a request's size.
        """
        repo = session.repo
        try:
            if chunk_size is None or blob.size <= chunk_size:
                blob.greedy = True
                body: RequestBody = blob if blob.size else b""
                self._commit(session.location, repo, blob.digest, body, blob.size)
                return
            location, offset = session.location, session.offset
            while offset < blob.size:
                length = min(chunk_size, blob.size - offset)
                response = self._scoped(
                    "PATCH",
                    repo,
                    location,
                    actions=PUSH,
                    data=blob.slice(length),
                    replayable=False,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + length - 1}",
                        "Content-Length": str(length),
                    },
                )
                with response:
                    self._check(response, repo, f"blob {blob.digest}", PUSH)
                    location = self._location(response, repo)
                offset += length
            self._commit(location, repo, blob.digest, b"", 0)
        except BaseException:
            self.cancel_upload(session)
            raise

    def _commit(
        self, location: str, repo: Repository, digest: str, body: RequestBody, size: int
    ) -> None:
        response = self._scoped(
            "PUT",
            repo,
            with_query(location, digest=digest),
            actions=PUSH,
            data=body,
            replayable=isinstance(body, bytes),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        with response:
            self._check(response, repo, f"blob {digest}", PUSH)
            stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise DigestMismatch(
                    f"registry {api_host(repo.registry)} stored blob {digest} of {repo.name}"
                    f" as {stored}"
                )

    def cancel_upload(self, session: UploadSession) -> None:
        """Best effort: tell the registry to drop an unfinished upload."""
        with contextlib.suppress(RegistryError, requests.RequestException):
            self._scoped("DELETE", session.repo, session.location, actions=PUSH).close()

    # -- manifests --------------------------------------------------------------------------

    def put_manifest(self, repo: Repository, reference: str, media_type: str, body: bytes) -> str:
        """PUT a manifest under a digest or a tag; returns its digest (checked against the
        registry's answer)."""
        digest = compute_digest(body)
        if ":" in reference and reference != digest:
            raise DigestMismatch(f"manifest for {repo.name}@{reference} hashes to {digest}")
        response = self._scoped(
            "PUT",
            repo,
            f"/v2/{repo.path}/manifests/{reference}",
            actions=PUSH,
            data=body,
            headers={"Content-Type": media_type},
        )
        with response:
            self._check(response, repo, f"manifest {reference}", PUSH)
            stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise DigestMismatch(
                    f"registry {api_host(repo.registry)} stored manifest {digest} of"
                    f" {repo.name} as {stored}"
                )
        return digest

    def delete_manifest(self, repo: Repository, digest: str) -> bool:
        """DELETE a manifest by digest; False when the registry did not hold it."""
        path = f"/v2/{repo.path}/manifests/{digest}"
        response = self._scoped("DELETE", repo, path, actions=DELETE)
        with response:
            if response.status_code == 404:
                return False
            if response.status_code == 405:
                raise Forbidden(
                    f"registry {api_host(repo.registry)} does not allow deleting manifests"
                    f" ({repo.name}@{digest}); enable deletes (distribution:"
                    " storage.delete.enabled: true)",
                    status=405,
                )
            self._check(response, repo, f"manifest {digest}", DELETE)
            return True

    # -- requests with a scope ---------------------------------------------------------------

    def _scoped(
        self,
        method: str,
        repo: Repository,
        target: str,
        *,
        actions: str = PULL,
        scopes: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: QueryParams | None = None,
        data: RequestBody | None = None,
        replayable: bool = True,
    ) -> requests.Response:
        """One request to `repo`'s registry (`target`: a path, or an absolute upload URL)
        with a token for `scopes` (default: `repo` with `actions`), through the base
        client's `request`: never a redirect followed, and a path goes to the scheme the
        registry answered `/v2/` on, so a write is not tried on a guessed one."""
        url = target if "://" in target else self.probed_url(repo, target)
        return self.request(
            method,
            repo,
            url,
            headers,
            scopes=scopes or (repository_scope(repo.path, actions),),
            params=params,
            data=data,
            replayable=replayable,
            follow_redirects=False,
        )

    def _location(self, response: requests.Response, repo: Repository) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise InternalError(
                f"registry {api_host(repo.registry)} opened a blob upload to {repo.name}"
                " without a Location"
            )
        return urllib.parse.urljoin(response.url, location)

    def _check(
        self, response: requests.Response, repo: Repository, what: str, actions: str
    ) -> None:
        """Raise the typed error for a non-2xx answer to an operation on `what`."""
        status = response.status_code
        if 200 <= status < 300:
            return
        host = api_host(repo.registry)
        if response.request.method == "HEAD":
            detail = ""
        else:
            detail = error_detail(response, self.config.read_timeout)
        answered = f"registry {host} answered HTTP {status}{detail}"
        verb = {PULL: "pull from", DELETE: "delete from"}.get(actions, "push to")
        if status == 404:
            raise NotFound(f"{what} not found in {repo.name} ({answered})", status=status)
        if status == 401:
            who = (
                f"the credentials from {repo.credential.source or 'the configured secret'}"
                if repo.credential
                else "no credentials"
            )
            raise Unauthorized(
                f"not authorized to {verb} {repo.name} ({answered}); {who} were used",
                status=status,
            )
        if status == 403:
            raise Forbidden(f"{verb} {repo.name} is denied ({answered})", status=status)
        retry_after = None
        if status in (429, 503):
            retry_after = self.retry_after(response)
        raise InternalError(
            f"{what} in {repo.name}: {answered}", status=status, retry_after=retry_after
        )
