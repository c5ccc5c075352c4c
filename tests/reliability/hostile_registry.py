"""A registry that misbehaves on purpose, on 127.0.0.1: endless and dripping bodies, huge and
dripping headers, redirect loops, bodies that inflate, numbers too long to parse.

The first path segment of a repository picks the misbehaviour (`/v2/<mode>/app/manifests/…`);
the `/v2/` probe misbehaves when the server is made with `probe=` a mode. A token request goes
to `/token/<mode>`. Every endless or dripping answer stops when the client goes away, when the
server stops, or after `LIFETIME` seconds, so no test can leave one running.
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

CHUNK = b"a" * 65536
DRIP_INTERVAL = 0.1  # a byte every 0.1 s: far inside any per-read timeout
LIFETIME = 60.0  # no answer runs longer than this, whatever the client does
MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,'
    b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},'
    b'"layers":[]}'
)
NESTED = b"[" * 200_000 + b"]" * 200_000  # JSON nested deeper than Python's recursion limit


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


_bomb: bytes | None = None


def gzip_bomb() -> bytes:
    """256 MiB of zeros in a quarter of a MiB of gzip."""
    global _bomb
    if _bomb is None:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
        zeros = bytes(1 << 20)
        _bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()
    return _bomb


class HostileRegistry:
    """`probe`: how `/v2/` misbehaves; `tls`: a directory with tls.crt and tls.key to serve
    HTTPS with (else plain HTTP)."""

    def __init__(self, probe: str = "", tls: Path | None = None) -> None:
        self.probe = probe
        self.scheme = "https" if tls else "http"
        self.requests: Counter[str] = Counter()
        self.stopping = threading.Event()
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry.answer(self, head=False)

            def do_HEAD(self) -> None:
                registry.answer(self, head=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls / "tls.crt", tls / "tls.key")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HostileRegistry:
        gzip_bomb()  # made before any client waits for it
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -- answers -------------------------------------------------------------------------

    def answer(self, req: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        parts = req.path.split("?", 1)[0].strip("/").split("/")
        try:
            if parts == ["v2"]:
                self.requests["probe"] += 1
                if self.probe:
                    self._misbehave(req, self.probe, head)
                else:
                    self._send(req, 200, b"{}")
            elif parts[0] == "token":
                self.requests[f"token/{parts[1]}"] += 1
                self._misbehave(req, parts[1], head)
            elif parts[0] == "v2" and len(parts) >= 3:
                self.requests[parts[1]] += 1
                self._registry(req, parts[1], head)
            else:
                self._send(req, 404, b"")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: as it should

    def _registry(self, req: http.server.BaseHTTPRequestHandler, mode: str, head: bool) -> None:
        """What /v2/<mode>/app/manifests/<ref> answers."""
        if mode.endswith("-token") and "Authorization" not in req.headers:
            realm = f"{self.scheme}://{self.host}/token/{mode.removesuffix('-token')}"
            challenge = f'Bearer realm="{realm}",service="hostile"'
            self._send(req, 401, b"", {"WWW-Authenticate": challenge})
        elif mode.endswith("-token") or mode == "fine":
            headers = {"Docker-Content-Digest": digest_of(MANIFEST)}
            headers["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
            self._send(req, 200, b"" if head else MANIFEST, headers)
        else:
            self._misbehave(req, mode, head)

    def _misbehave(self, req: http.server.BaseHTTPRequestHandler, mode: str, head: bool) -> None:
        manifest_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        if mode == "endless":
            self._start(req, 200, manifest_type)
            self._endless(req)
        elif mode == "drip":
            self._start(req, 200, manifest_type)
            self._drip(req)
        elif mode == "endless-error":
            self._start(req, 404, {"Content-Type": "application/json"})
            self._endless(req)
        elif mode == "drip-error":
            self._start(req, 404, {"Content-Type": "application/json"})
            self._drip(req)
        elif mode == "gzip":
            body = gzip_bomb()
            headers = {"Content-Encoding": "gzip", "Content-Length": str(len(body))}
            self._start(req, 200, headers)
            req.wfile.write(body)
        elif mode == "drip-headers":
            req.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(req, b"X-Slow: " + b"a" * 60000 + b"\r\n")
        elif mode == "huge-header":
            req.wfile.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\n\r\n")
        elif mode == "many-headers":
            lines = b"".join(b"X-Many-%d: %s\r\n" % (i, b"a" * 1000) for i in range(10_000))
            req.wfile.write(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n")
        elif mode == "redirect-loop":
            self._send(req, 302, b"", {"Location": req.path})
        elif mode == "redirect-endless":
            self._start(req, 302, {"Location": "/v2/fine/app/manifests/latest"})
            self._endless(req)
        elif mode == "nested":
            headers = {"Docker-Content-Digest": digest_of(NESTED), **manifest_type}
            self._send(req, 200, b"" if head else NESTED, headers)
        elif mode == "huge-length":
            length = "9" * 5000
            req.wfile.write(
                b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: %s\r\nContent-Length: %s\r\n"
                b"Connection: close\r\n\r\n" % (digest_of(MANIFEST).encode(), length.encode())
            )
        elif mode == "huge-retry-after":
            self._send(req, 429, b"", {"Retry-After": "9" * 5000})
        elif mode == "rate-limited":
            self._send(req, 429, b"", {"Retry-After": "7"})
        elif mode == "hang":  # the connection is taken, then nothing is ever sent
            self.stopping.wait(LIFETIME)
        else:
            self._send(req, 404, b"")

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _start(
        req: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str]
    ) -> None:
        """Status and headers, no Content-Length: the body ends when the connection does."""
        req.send_response_only(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.flush()

    def _send(
        self,
        req: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        req.send_response_only(status)
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _endless(self, req: http.server.BaseHTTPRequestHandler) -> None:
        deadline = time.monotonic() + LIFETIME
        while not self.stopping.is_set() and time.monotonic() < deadline:
            req.wfile.write(CHUNK)

    def _drip(self, req: http.server.BaseHTTPRequestHandler, data: bytes = b"a" * 100_000) -> None:
        deadline = time.monotonic() + LIFETIME
        for i in range(len(data)):
            if self.stopping.wait(DRIP_INTERVAL) or time.monotonic() > deadline:
                return
            req.wfile.write(data[i : i + 1])
            req.wfile.flush()
