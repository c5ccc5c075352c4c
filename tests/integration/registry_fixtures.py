"""Helpers for integration tests against a real OCI registry on loopback (fixtures in conftest.py).

The CNCF distribution registry and crane come from `hack/tools.sh` (`make tools`), which puts
them in `$IMAGESTREAMS_CACHE/bin` (default `~/.cache/imagestreams/bin`); PATH is the fallback.
A test that needs them and cannot find them fails and says so: it never silently passes.

One storage directory is served by several registry processes at once, each with a different
`auth` section: an open one (crane pushes the test images there, anonymously), one with
`htpasswd` basic auth and one with `token` auth backed by a small token server written here.
The distribution registry keeps no state outside its storage directory (no cache is
configured), so all of them see the same repositories, tags and digests.

Every image is generated here (random layer tarballs, platforms set with `crane mutate`,
indexes with `crane index append`): nothing is pulled from outside.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import http.client
import http.server
import io
import json
import os
import secrets
import shutil
import socket
import socketserver
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest
import requests
import yaml

CACHE_DIR = Path(os.environ.get("IMAGESTREAMS_CACHE", Path.home() / ".cache" / "imagestreams"))
TOKEN_SERVICE = "imagestreams-test-registry"
TOKEN_ISSUER = "imagestreams-test-issuer"


# ---------------------------------------------------------------------------------------------
# Tools and processes


def find_tool(name: str) -> str:
    """The path of a tool from `make tools`, else from PATH; fails the test if missing."""
    candidate = CACHE_DIR / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"{name!r} not found in {CACHE_DIR / 'bin'} or on PATH: run `make tools`"
        " (hack/tools.sh builds the registry and crane from the Go module proxy)",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str,
    process: subprocess.Popen[bytes] | None,
    log: Path | None,
    verify: bool | str = True,
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{url}: process exited with {process.returncode}:\n{output}")
        try:
            requests.get(url, timeout=1, verify=verify)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 30 s")


@dataclass
class RegistryServer:
    """A running distribution registry: `host` is `127.0.0.1:PORT`, plain HTTP unless
    started with a certificate."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    log: Path
    config: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(
    workdir: Path,
    storage: Path,
    name: str,
    auth: dict[str, Any] | None = None,
    *,
    tls: tuple[Path, Path, Path] | None = None,
) -> RegistryServer:
    """A registry serving `storage`; `tls` is (certificate, key, CA that signed them): it
    then serves HTTPS with that certificate."""
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = auth
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config_path = workdir / f"{name}.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [find_tool("registry"), "serve", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
    scheme = "https" if tls else "http"
    server = RegistryServer(name, f"127.0.0.1:{port}", process, log_path, config_path, scheme)
    try:
        wait_for_http(f"{server.url}/v2/", process, log_path, str(tls[2]) if tls else True)
    except RuntimeError:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------------------
# Small HTTP servers on loopback: the token server and the proxies


class ThreadedServer:
    """A server on 127.0.0.1 (a free port) that answers from a daemon thread between
    `start` and `stop`. Subclasses (dataclasses with a `server` field defaulting to None)
    say in `bind` which server they are."""

    server: socketserver.TCPServer | None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def bind(self) -> socketserver.TCPServer:
        raise NotImplementedError

    def start(self) -> Self:
        self.server = self.bind()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class LoopbackServer(ThreadedServer):
    """A threaded HTTP server on 127.0.0.1 that hands each request to `self.handle`.

    Subclasses set the request `methods` they answer and the `protocol_version`. `handle`
    is looked up for every request, so a test can monkeypatch it on a running server.
    """

    methods: ClassVar[tuple[str, ...]] = ("GET",)
    protocol_version: ClassVar[str] = "HTTP/1.0"
    server: http.server.ThreadingHTTPServer | None

    def bind(self) -> http.server.ThreadingHTTPServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = owner.protocol_version

            def log_message(self, format: str, *args: Any) -> None:
                pass

        def answer(request: http.server.BaseHTTPRequestHandler) -> None:
            owner.handle(request)

        for method in self.methods:
            setattr(Handler, f"do_{method}", answer)
        return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        raise NotImplementedError


_NOT_RELAYED = ("content-length", "transfer-encoding", "connection", "date")


def fetch_upstream(
    request: http.server.BaseHTTPRequestHandler, netloc: str, headers: Collection[str]
) -> tuple[http.client.HTTPResponse, bytes]:
    """Send `request` on to the server at `netloc` with only the `headers` named (lowercase)
    and read the whole answer."""
    connection = http.client.HTTPConnection(netloc, timeout=10)
    try:
        forwarded = {
            name: value for name, value in request.headers.items() if name.lower() in headers
        }
        connection.request(request.command, request.path, headers=forwarded)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def relay_head(
    request: http.server.BaseHTTPRequestHandler, response: http.client.HTTPResponse, body: bytes
) -> None:
    """Answer `request` with `response`'s status and headers, and a Content-Length for
    `body` (for HEAD, the upstream's); the caller writes the body."""
    request.send_response(response.status)
    for name, value in response.getheaders():
        if name.lower() not in _NOT_RELAYED:
            request.send_header(name, value)
    length = response.getheader("Content-Length") if request.command == "HEAD" else None
    request.send_header("Content-Length", length or str(len(body)))
    request.end_headers()


# ---------------------------------------------------------------------------------------------
# A token server for `auth: token`


@dataclass
class TokenIssuer:
    """Signs registry bearer tokens (RS256, certificate in the `x5c` header)."""

    key: Any
    cert_der: bytes
    cert_pem: bytes

    @classmethod
    def generate(cls) -> TokenIssuer:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagestreams test tokens")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(
            key,
            cert.public_bytes(serialization.Encoding.DER),
            cert.public_bytes(serialization.Encoding.PEM),
        )

    def sign(self, subject: str, access: list[dict[str, Any]], lifetime: int) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64url(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


@dataclass
class TokenServer(LoopbackServer):
    """`GET /token?service=…&scope=repository:NAME:pull` with optional basic auth.

    Known users get what they ask for; anonymous callers get pull access to `public/*` only
    (an empty grant otherwise, as Docker Hub's token server does).
    """

    issuer: TokenIssuer
    users: dict[str, str]
    lifetime: int = 300
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(request.path).query)
        user = self._user(request.headers.get("Authorization", ""))
        self.requests.append({"user": user, "query": query})
        if user == "!":
            request.send_response(401)
            request.send_header("Content-Type", "application/json")
            request.end_headers()
            request.wfile.write(b'{"details":"invalid credentials"}')
            return
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and (user or name.startswith("public/")):
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.issuer.sign(user or "anonymous", access, self.lifetime)
        body = json.dumps({"token": token, "expires_in": self.lifetime}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _user(self, authorization: str) -> str:
        """ "" for anonymous, the user name when the password is right, "!" when it is wrong."""
        if not authorization.startswith("Basic "):
            return ""
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return "!"
        return user if self.users.get(user) == password else "!"


# ---------------------------------------------------------------------------------------------
# A scripted proxy: rate limits and tampering in front of a real registry


@dataclass
class ScriptedProxy(LoopbackServer):
    """Forwards to `upstream` (a registry URL) and can misbehave on purpose.

    `canned` is a queue of (status, headers) answers given instead of forwarding, one per
    request; with `tamper` set, manifest bodies are altered while the registry's
    Docker-Content-Digest header is passed on unchanged.
    """

    upstream: str
    canned: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    tamper: bool = False
    log: list[tuple[float, str, str, int]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None
    methods = ("GET", "HEAD")
    protocol_version = "HTTP/1.1"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        if self.canned:
            status, headers = self.canned.pop(0)
            self.log.append((time.monotonic(), request.command, request.path, status))
            request.send_response(status)
            for name, value in headers.items():
                request.send_header(name, value)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        netloc = urllib.parse.urlparse(self.upstream).netloc
        response, body = fetch_upstream(request, netloc, ("accept", "authorization"))
        if self.tamper and request.command == "GET" and "/manifests/" in request.path:
            body = body.replace(b"{", b"{ ", 1)  # still valid JSON, another digest
        self.log.append((time.monotonic(), request.command, request.path, response.status))
        relay_head(request, response, body)
        if request.command != "HEAD":
            request.wfile.write(body)


# ---------------------------------------------------------------------------------------------
# Test images


@dataclass
class PushedImages:
    """Repositories and digests pushed into the shared storage (by `crane digest`)."""

    single_docker: str = "test/app:v1"  # Docker schema 2 manifest
    single_oci: str = "test/app:v2"  # OCI manifest
    multi_oci: str = "test/multi:latest"  # OCI index: linux/amd64, linux/arm64/v8
    multi_docker: str = "test/multi-docker:latest"  # Docker manifest list, same platforms
    arm_only: str = "test/arm-only:latest"  # OCI index with linux/arm64/v8 only
    public: str = "public/hello:1"  # anonymous pull allowed by the token server
    digests: dict[str, str] = field(default_factory=dict)  # "repo:tag" → digest
    platform_digests: dict[str, str] = field(default_factory=dict)  # "linux/arm64/v8" → digest


def make_layer(
    path: Path,
    label: str,
    random_bytes: int = 0,
    *,
    member: str | None = None,
    compresslevel: int = 9,
) -> Path:
    """A gzipped tarball with one file, `member` (default `etc/LABEL.txt`): the label and a
    random token, plus `random_bytes` of incompressible data. Every layer is distinct."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        content = f"{label} {secrets.token_hex(16)}\n".encode() + os.urandom(random_bytes)
        info = tarfile.TarInfo(member or f"etc/{label}.txt")
        info.size = len(content)
        info.mtime = 0
        archive.addfile(info, io.BytesIO(content))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=compresslevel, mtime=0))
    return path


class Crane:
    def __init__(self, workdir: Path) -> None:
        self.binary = find_tool("crane")
        docker_config = workdir / "docker-config"
        docker_config.mkdir(exist_ok=True)
        (docker_config / "config.json").write_text("{}")
        self.env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, *args, "--insecure"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"crane {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()


def push_test_images(crane: Crane, registry: str, workdir: Path) -> PushedImages:
    images = PushedImages()

    def append(ref: str, label: str, *extra: str) -> None:
        layer = make_layer(workdir / f"{label}.tar.gz", label)
        crane("append", "-f", str(layer), "-t", f"{registry}/{ref}", *extra)

    append(images.single_docker, "app-v1")
    append(images.single_oci, "app-v2", "--oci-empty-base")
    append(images.public, "public-hello")
    parts = []
    for platform in ("linux/amd64", "linux/arm64/v8"):
        tag = platform.replace("/", "-")
        ref = f"{registry}/test/parts:{tag}"
        append(f"test/parts:{tag}", tag, "--oci-empty-base")
        crane("mutate", ref, "--set-platform", platform, "-t", ref)
        images.platform_digests[platform] = crane("digest", ref)
        parts.append(f"{ref}")
    crane("index", "append", "-m", parts[0], "-m", parts[1], "-t", f"{registry}/{images.multi_oci}")
    crane(
        "index",
        "append",
        "--docker-empty-base",
        "-m",
        parts[0],
        "-m",
        parts[1],
        "-t",
        f"{registry}/{images.multi_docker}",
    )
    crane("index", "append", "-m", parts[1], "-t", f"{registry}/{images.arm_only}")
    for ref in (
        images.single_docker,
        images.single_oci,
        images.multi_oci,
        images.multi_docker,
        images.arm_only,
        images.public,
    ):
        images.digests[ref] = crane("digest", f"{registry}/{ref}")
    return images


@dataclass
class Registries:
    open: RegistryServer
    htpasswd: RegistryServer
    token: RegistryServer
    token_server: TokenServer
    users: dict[str, str]
    images: PushedImages
    crane: Crane
    workdir: Path

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every loopback host:port the tests talk to, for the address guard's allow list."""
        return (self.open.host, self.htpasswd.host, self.token.host, self.token_server.host)
