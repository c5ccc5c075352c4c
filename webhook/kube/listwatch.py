"""A small client of the API server for the hot paths: list a page, watch from a version, ask
/readyz, PUT an object as JSON. Over urllib3 (which the kubernetes client is built on too),
it replaces the kubernetes client in the webhook's workers, whose modules cost each worker
~40 MiB of RSS for three GETs (docs/benchmarks.md, figure 4), and in the controller's
ImageStream watch and status writes, where the client's own work on each object (its
pydantic call checks, `sanitize_for_serialization` walking the object) cost 10-18% of a
status write's CPU.

Configured by webhook.kube.kubeconfig (a kubeconfig's server, CA, client certificate or
token, or a pod's service account); a bound token file is read again every TOKEN_REFRESH
seconds, as client-go does, since the kubelet rotates it. Objects stay plain dicts.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import urllib3

from webhook.kube.errors import ApiError as ApiError
from webhook.kube.kubeconfig import RestConfig
from webhook.model import build

log = logging.getLogger(__name__)

TOKEN_REFRESH = 60.0  # seconds; client-go reads a token file again after a minute too
CONNECT_TIMEOUT = 10.0
# A page of a list: the kubernetes client waits forever; a server that has not answered a
# page in two minutes is not going to, and the watch lists again.
LIST_TIMEOUT = 120.0
# A watch ends on the server's side after its timeoutSeconds and sends a bookmark about
# every minute meanwhile; silence this much longer than asked is a connection that died
# without a FIN (a node gone, a network partition).
WATCH_SLACK = 60.0
# A write: the API server ends a request it has not answered after its --request-timeout
# (a minute by default) itself; this is for a server that went silent.
WRITE_TIMEOUT = 120.0
# A write is sent again after a connection error, as the kubernetes client's urllib3
# default (3 tries) does, and once after the connection broke while it was under way (a
# pooled one the server closed as it was sent; a silent server): a PUT carrying a
# resourceVersion cannot apply twice, the second answers 409. Error statuses are answers,
# never retried here (not even a 429's Retry-After).
WRITE_RETRIES = urllib3.Retry(total=3, read=1, redirect=False, respect_retry_after_header=False)
POOL_SIZE = 4  # the webhook's: three watches and a /readyz at once


class Token:
    """The bearer token: fixed, or read from a file at most every `refresh` seconds (and at
    once after a 401). A file that cannot be read keeps the token read last."""

    def __init__(self, token: str | None, path: str | None, refresh: float = TOKEN_REFRESH) -> None:
        self._token = token
        self._path = path
        self._refresh = refresh
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Token(path={self._path!r})"  # never the token

    def get(self) -> str | None:
        if self._path is None:
            return self._token
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self._refresh:
                self._read(now)
            return self._token

    def expire(self) -> None:
        """Read the file again on the next request (the server said 401)."""
        with self._lock:
            self._read_at = None

    def _read(self, now: float) -> None:
        assert self._path is not None
        try:
            with open(self._path) as f:
                token = f.read().strip()
        except OSError as err:
            if self._token is None:
                raise
            log.warning("token file %s: %s; keeping the token read before", self._path, err)
            token = self._token
        self._token, self._read_at = token, now


def ssl_context(config: RestConfig) -> ssl.SSLContext:
    """The TLS context: the server's CA (else the system's roots), hostname checks unless
    insecure, and the client certificate if any (PEM data is written to a private
    temporary directory only long enough for OpenSSL to load it)."""
    if config.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert_file or config.cert_data:
        with tempfile.TemporaryDirectory(prefix="imagestreams-client-") as private:
            cert = _as_file(config.cert_file, config.cert_data, private, "tls.crt")
            key = _as_file(config.key_file, config.key_data, private, "tls.key")
            context.load_cert_chain(cert or "", key)
    return context


def _as_file(path: str | None, data: str | None, directory: str, name: str) -> str | None:
    if data is None:
        return path
    target = os.path.join(directory, name)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    return target


class RestClient:
    """Requests to one API server, as one identity; `resource()` gives a Watcher's source.

    `pool_size` is how many requests may be under way at once (a watch holds one for its
    life): urllib3 opens more when asked, but discards each beyond it when it is done, with
    a warning, and the next request opens another."""

    def __init__(
        self,
        config: RestConfig,
        *,
        token_refresh: float = TOKEN_REFRESH,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.server = config.server
        self._token = Token(config.token, config.token_file, token_refresh)
        self._token.get()  # a missing token file is an error now, not at the first list
        tls: dict[str, Any] = {}
        if config.server.startswith("https:"):
            tls["ssl_context"] = ssl_context(config)
            if config.tls_server_name:
                tls["server_hostname"] = config.tls_server_name
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=pool_size, retries=False, **tls)
        self._agent = f"imagestreams/{build.current(os.environ).version}"

    def __repr__(self) -> str:
        return f"RestClient({self.server!r})"

    def resource(self, path: str) -> ListWatch:
        """The list/watch source of a collection: `/api/v1/namespaces`,
        `/apis/GROUP/VERSION/PLURAL`."""
        return ListWatch(self, path)

    def get(
        self, path: str, fields: Mapping[str, str], *, timeout: urllib3.Timeout, stream: bool
    ) -> urllib3.BaseHTTPResponse:
        """GET `path`; an error status raises ApiError with the server's Status body."""
        response = self._pool.request(
            "GET",
            self.server + path,
            fields=dict(fields),
            headers=self._headers(),
            timeout=timeout,
            preload_content=not stream,
            redirect=False,
        )
        return self._checked(response)

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT `body` (JSON) to `path`: the object the server stored. An error status raises
        ApiError with the server's Status body."""
        headers = self._headers()
        headers["Content-Type"] = "application/json"
        response = self._pool.request(
            "PUT",
            self.server + path,
            body=json.dumps(body).encode(),
            headers=headers,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=WRITE_TIMEOUT),
            retries=WRITE_RETRIES,
            redirect=False,
        )
        written: dict[str, Any] = json.loads(self._checked(response).data)
        return written

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._agent}
        token = self._token.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _checked(self, response: urllib3.BaseHTTPResponse) -> urllib3.BaseHTTPResponse:
        """`response` if its status is a success; else raise ApiError with its body."""
        if 200 <= response.status < 300:
            return response
        body = response.data.decode("utf-8", "replace")  # reads the rest: the connection is free
        response.release_conn()
        if response.status == 401:
            self._token.expire()
        raise ApiError(response.status, response.reason or "", body)

    def readyz(self, timeout: float) -> int:
        """The status /readyz answers with; an error status too (not raised)."""
        try:
            response = self.get("/readyz", {}, timeout=urllib3.Timeout(timeout), stream=False)
        except ApiError as err:
            return err.status
        return response.status


class ListWatch:
    """One collection's list pages and watch events (webhook.kube.watch.Source)."""

    def __init__(self, client: RestClient, path: str) -> None:
        self._client = client
        self._path = path

    def __repr__(self) -> str:
        return f"ListWatch({self._client.server}{self._path})"

    def list_page(self, limit: int, token: str | None) -> bytes:
        fields = {"limit": str(limit)}
        if token:
            fields["continue"] = token
        timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=LIST_TIMEOUT)
        return self._client.get(self._path, fields, timeout=timeout, stream=False).data

    def watch(self, resource_version: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) for each event until the server ends the watch; an ERROR event
        (410 Gone: the version was compacted away) raises ApiError as the kubernetes
        client's Watch does. Closing the iterator closes the connection."""
        fields = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        limit = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout + WATCH_SLACK)
        response = self._client.get(self._path, fields, timeout=limit, stream=True)
        try:
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    reason = f"{obj.get('reason')}: {obj.get('message')}"
                    raise ApiError(int(obj.get("code") or 500), reason, json.dumps(obj))
                yield str(kind), obj
        finally:
            response.close()  # a watch stopped early is not read to its end
            response.release_conn()

    def readyz(self, timeout: float) -> int | None:
        return self._client.readyz(timeout)


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The non-empty lines of a streamed body, each as soon as it is complete."""
    buffer = b""
    # amt=None: each chunk as it arrives (the API server sends an event per chunk).
    for chunk in response.stream(None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


def collection_path(group: str, version: str, plural: str) -> str:
    """The cluster-wide path of a kind: the core group's (`group` "") or a named group's."""
    parts = [quote(p, safe="") for p in (group, version, plural)]
    return f"/api/{parts[1]}/{parts[2]}" if not group else "/apis/{}/{}/{}".format(*parts)


def object_path(group: str, version: str, plural: str, namespace: str, name: str) -> str:
    """The path of one namespaced object: `…/namespaces/NAMESPACE/PLURAL/NAME`."""
    prefix, _, kind = collection_path(group, version, plural).rpartition("/")
    return f"{prefix}/namespaces/{quote(namespace, safe='')}/{kind}/{quote(name, safe='')}"
