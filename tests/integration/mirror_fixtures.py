"""Two real registries for the mirror tests: an "upstream" and the "local" one.

The upstream is an open distribution registry; crane pushes generated images into it. The
local registry has its own storage and token auth (the token server from
registry_fixtures.py, which grants a known user whatever it asks for), so every push needs a
`repository:NAME:pull,push` token and every mount a `repository:FROM:pull` one as well.
crane refuses token realms on private addresses, so it reads the local registry's storage
through a second registry process without auth (`local_view`), as registry_fixtures.py
does for its own registries: same storage, same bytes, same digests.

Images (all generated here, nothing pulled from outside):
- `app:1`  Docker schema 2, three layers (two "base" layers and one of its own);
- `app:2`  app:1 plus one layer: shares app:1's three layers, has its own config;
- `multi:1` OCI index of linux/amd64 and linux/arm64/v8, both on one shared base layer;
- `arm:1`  OCI index with the same linux/arm64/v8 manifest only;
- `big:1`  one 3 MiB incompressible layer: more than one read chunk, several upload chunks.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import registry_fixtures
from registry_fixtures import (
    TOKEN_ISSUER,
    TOKEN_SERVICE,
    Crane,
    LoopbackServer,
    RegistryServer,
    TokenIssuer,
    TokenServer,
    fetch_upstream,
    relay_head,
    start_registry,
)


def make_layer(path: Path, label: str, random_bytes: int = 0) -> Path:
    """`registry_fixtures.make_layer` as the mirror tests want it: `opt/LABEL.bin`, and
    gzip's fastest level, since a mirror layer may be megabytes of random data."""
    return registry_fixtures.make_layer(
        path, label, random_bytes, member=f"opt/{label}.bin", compresslevel=1
    )


@dataclass
class MirrorSetup:
    upstream: RegistryServer
    local: RegistryServer
    local_view: RegistryServer
    token_server: TokenServer
    user: str
    password: str
    crane: Crane
    workdir: Path
    digests: dict[str, str] = field(default_factory=dict)  # "app:1" → digest
    platform_digests: dict[str, str] = field(default_factory=dict)  # "linux/amd64" → digest

    @property
    def allowed(self) -> tuple[str, ...]:
        return (self.upstream.host, self.local.host, self.token_server.host)

    def upstream_ref(self, name: str) -> str:
        return f"{self.upstream.host}/test/{name}"

    def local_ref(self, name: str) -> str:
        """`name` in the local registry, as crane reads it (through `local_view`)."""
        return f"{self.local_view.host}/{name}"


def start_local_registry(
    workdir: Path, name: str = "local"
) -> tuple[RegistryServer, RegistryServer, TokenServer]:
    """The token-auth local registry, an open view of its storage, and its token server."""
    storage = workdir / f"{name}-storage"
    storage.mkdir()
    issuer = TokenIssuer.generate()
    bundle = workdir / f"{name}-token-ca.pem"
    bundle.write_bytes(issuer.cert_pem)
    token_server = TokenServer(issuer, {"mirror": secrets.token_urlsafe(12)})
    token_server.start()
    try:
        server = start_registry(
            workdir,
            storage,
            name,
            {
                "token": {
                    "realm": token_server.realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(bundle),
                }
            },
        )
    except Exception:
        token_server.stop()
        raise
    try:
        view = start_registry(workdir, storage, f"{name}-view")
    except Exception:
        server.stop()
        token_server.stop()
        raise
    return server, view, token_server


def start_upstream(workdir: Path, name: str = "upstream") -> RegistryServer:
    storage = workdir / f"{name}-storage"
    storage.mkdir()
    return start_registry(workdir, storage, name)


def push_images(setup: MirrorSetup) -> None:
    crane, work = setup.crane, setup.workdir

    def layer(label: str, random_bytes: int = 0) -> str:
        return str(make_layer(work / f"{label}.tar.gz", label, random_bytes))

    ref = setup.upstream_ref
    crane(
        "append",
        "-f",
        layer("base-1"),
        "-f",
        layer("base-2"),
        "-f",
        layer("app-1"),
        "-t",
        ref("app:1"),
    )
    crane("append", "-b", ref("app:1"), "-f", layer("app-2"), "-t", ref("app:2"))
    crane("append", "--oci-empty-base", "-f", layer("common"), "-t", ref("parts:base"))
    parts = []
    for platform in ("linux/amd64", "linux/arm64/v8"):
        tag = platform.replace("/", "-")
        crane("append", "-b", ref("parts:base"), "-f", layer(tag), "-t", ref(f"parts:{tag}"))
        crane("mutate", ref(f"parts:{tag}"), "--set-platform", platform, "-t", ref(f"parts:{tag}"))
        setup.platform_digests[platform] = crane("digest", ref(f"parts:{tag}"))
        parts.append(ref(f"parts:{tag}"))
    crane("index", "append", "-m", parts[0], "-m", parts[1], "-t", ref("multi:1"))
    crane("index", "append", "-m", parts[1], "-t", ref("arm:1"))
    crane("append", "--oci-empty-base", "-f", layer("big", 3 * 1024 * 1024), "-t", ref("big:1"))
    for name in ("app:1", "app:2", "multi:1", "arm:1", "big:1"):
        setup.digests[name] = crane("digest", ref(name))


@pytest.fixture(scope="module")
def mirror_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorSetup]:
    workdir = tmp_path_factory.mktemp("mirror")
    upstream = start_upstream(workdir)
    try:
        local, view, token_server = start_local_registry(workdir)
    except Exception:
        upstream.stop()
        raise
    try:
        user, password = next(iter(token_server.users.items()))
        setup = MirrorSetup(
            upstream,
            local,
            view,
            token_server,
            user,
            password,
            Crane(workdir),
            workdir,
        )
        push_images(setup)
        yield setup
    finally:
        upstream.stop()
        local.stop()
        view.stop()
        token_server.stop()


@dataclass
class TamperingProxy(LoopbackServer):
    """Forwards GET and HEAD to a registry and spoils blob bodies on the way: `flip` changes
    their first byte (headers, Content-Length and Docker-Content-Digest unchanged);
    `truncate` sends half the body under the full Content-Length and drops the connection."""

    upstream: str  # host:port
    mode: str = "flip"
    server: http.server.ThreadingHTTPServer | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    methods = ("GET", "HEAD")
    protocol_version = "HTTP/1.1"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append((request.command, urllib.parse.urlsplit(request.path).path))
        response, body = fetch_upstream(request, self.upstream, ("accept",))
        spoil = "/blobs/" in request.path and request.command == "GET" and bool(body)
        if spoil and self.mode == "flip":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        relay_head(request, response, body)
        if spoil and self.mode == "truncate":
            request.wfile.write(body[: len(body) // 2])
            request.close_connection = True
        elif request.command != "HEAD":
            request.wfile.write(body)
