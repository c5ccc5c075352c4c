"""Private registries: a registry serving TLS with a CA of its own, and registries reached
through an HTTP(S) proxy, against the real distribution registry on loopback.

The proxy here is a small CONNECT (and forwarding) proxy that records where each tunnel
was asked to go and then connects to the test registry, whatever the target: so a test can
give a registry a public-looking address (through the client's resolver) and still reach it,
and see that the tunnel was opened to the address the guard approved.
"""

from __future__ import annotations

import select
import socket
import socketserver
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from registry_fixtures import Registries, RegistryServer, ThreadedServer, start_registry
from test_registry_client import run_import

from webhook.registry.client import ClientConfig, RegistryClient, Repository
from webhook.registry.errors import AddressRefused
from webhook.registry.proxies import ProxyConfig
from webhook.tls.certs import issue, new_ca

pytestmark = pytest.mark.integration

PUBLIC_ADDRESS = "93.184.216.34"  # global: the guard lets it through; the proxy never dials it


@dataclass
class TLSRegistry:
    server: RegistryServer
    ca_file: Path
    port: int


@pytest.fixture(scope="module")
def tls_registry(registries: Registries) -> Iterator[TLSRegistry]:
    """A registry on the shared storage serving HTTPS with a certificate from a private CA,
    for the names `localhost` and `registry.example` and the address 127.0.0.1."""
    workdir = registries.workdir
    ca = new_ca("imagestreams test private CA")
    leaf = issue(
        ca,
        "registry.example",
        dns=["registry.example", "localhost"],
        ips=["127.0.0.1"],
        server=True,
    )
    cert, key, ca_file = workdir / "tls.crt", workdir / "tls.key", workdir / "private-ca.crt"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    ca_file.write_bytes(ca.cert_pem)
    server = start_registry(workdir, workdir / "storage", "tls", tls=(cert, key, ca_file))
    try:
        yield TLSRegistry(server, ca_file, int(server.host.rsplit(":", 1)[1]))
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# A private CA


def test_private_ca_fails_clearly_without_the_bundle(
    tls_registry: TLSRegistry, registries: Registries
) -> None:
    host = tls_registry.server.host
    with RegistryClient(ClientConfig(allowed_registries=(host,))) as client:
        result = run_import(client, f"{host}/{registries.images.single_docker}")
    assert not result.succeeded
    message = result.condition["message"]  # type: ignore[index]
    assert "certificate is not trusted" in message
    assert "(unable to get local issuer certificate)" in message
    assert "--registry-ca-file" in message


def test_private_ca_imports_with_the_bundle(
    tls_registry: TLSRegistry, registries: Registries
) -> None:
    host = tls_registry.server.host
    ref = registries.images.single_docker
    config = ClientConfig(allowed_registries=(host,), ca_files=(str(tls_registry.ca_file),))
    with RegistryClient(config) as client:
        result = run_import(client, f"{host}/{ref}")
    assert result.succeeded, result.condition
    assert result.event is not None
    assert result.event["image"] == registries.images.digests[ref]


def test_a_file_without_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"registry CA file {bad}: no PEM certificate"):
        RegistryClient(ClientConfig(ca_files=(str(bad),)))
    with pytest.raises(ValueError, match="no such file"):
        RegistryClient(ClientConfig(ca_files=(str(tmp_path / "missing.pem"),)))


# ---------------------------------------------------------------------------------------------
# A proxy


@dataclass
class Proxy(ThreadedServer):
    """CONNECT tunnels (and forwarded plain-HTTP requests) to `upstream`, whatever the
    target; `targets` records what each connection asked for."""

    upstream: tuple[str, int]
    tunnels: bool = True  # False: CONNECT is refused (a forwarding-only proxy)
    targets: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    server: socketserver.TCPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def bind(self) -> socketserver.TCPServer:
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner.serve(self.connection, self.rfile)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def serve(self, client: socket.socket, rfile: object) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line, _, rest = head.partition(b"\r\n")
        method, target, _ = request_line.decode().split(" ", 2)
        for line in rest.decode(errors="replace").split("\r\n"):
            if line.lower().startswith("proxy-authorization:"):
                self.authorizations.append(line.split(":", 1)[1].strip())
        if method == "CONNECT" and not self.tunnels:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = socket.create_connection(self.upstream, timeout=10)
        if method == "CONNECT":
            self.targets.append(target)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # forwarded: the registry takes the absolute-form request line as it is
            self.targets.append(f"{method} {target}")
            upstream.sendall(head)
        pipe(client, upstream)


def pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 10)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


@pytest.fixture
def tunnel_proxy(tls_registry: TLSRegistry) -> Iterator[Proxy]:
    proxy = Proxy(("127.0.0.1", tls_registry.port)).start()
    yield proxy
    proxy.stop()


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        if host.replace(".", "").isdigit():
            return [host]  # an address resolves to itself
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    return resolve


def test_import_through_a_proxy_tunnels_to_the_address_the_guard_approved(
    tls_registry: TLSRegistry, registries: Registries, tunnel_proxy: Proxy
) -> None:
    # registry.example is not allowed: the guard resolves it (to a public address) and the
    # tunnel goes to that address; TLS still checks the certificate for the name.
    ref = registries.images.single_oci
    config = ClientConfig(
        ca_files=(str(tls_registry.ca_file),), proxies=ProxyConfig(https=tunnel_proxy.url)
    )
    table = {"registry.example": [PUBLIC_ADDRESS]}
    with RegistryClient(config, resolver=resolver(table)) as client:
        result = run_import(client, f"registry.example/{ref}")
    assert result.succeeded, result.condition
    assert result.event is not None
    assert result.event["image"] == registries.images.digests[ref]
    assert tunnel_proxy.targets
    assert set(tunnel_proxy.targets) == {f"{PUBLIC_ADDRESS}:443"}


def test_the_guard_refuses_a_forbidden_address_behind_a_proxy(
    tls_registry: TLSRegistry, registries: Registries, tunnel_proxy: Proxy
) -> None:
    config = ClientConfig(
        ca_files=(str(tls_registry.ca_file),), proxies=ProxyConfig(https=tunnel_proxy.url)
    )
    table = {"metadata.example": ["169.254.169.254"], "registry.example": ["10.1.2.3"]}
    with RegistryClient(config, resolver=resolver(table)) as client:
        for source in (
            "metadata.example/latest/meta-data:x",
            "registry.example/test/app:v1",
            f"{tls_registry.server.host}/test/app:v1",  # loopback, not allowed
        ):
            result = run_import(client, source)
            assert result.reason == "Forbidden", (source, result.condition)
            assert "refusing to contact" in result.condition["message"]  # type: ignore[index]
    assert tunnel_proxy.targets == []


def test_an_allowed_registry_is_tunnelled_to_by_name(
    tls_registry: TLSRegistry, registries: Registries, tunnel_proxy: Proxy
) -> None:
    # The operator vouched for it, and behind a proxy only the proxy may resolve it.
    host = f"localhost:{tls_registry.port}"
    config = ClientConfig(
        allowed_registries=(host,),
        ca_files=(str(tls_registry.ca_file),),
        proxies=ProxyConfig(https=tunnel_proxy.url),
    )
    with RegistryClient(config, resolver=resolver({})) as client:
        result = run_import(client, f"{host}/{registries.images.single_docker}")
    assert result.succeeded, result.condition
    assert set(tunnel_proxy.targets) == {host}


def test_no_proxy_hosts_are_reached_directly(
    tls_registry: TLSRegistry, registries: Registries, tunnel_proxy: Proxy
) -> None:
    host = tls_registry.server.host
    proxies = ProxyConfig.from_settings(tunnel_proxy.url, None, "10.0.0.0/8, 127.0.0.1")
    config = ClientConfig(
        allowed_registries=(host,), ca_files=(str(tls_registry.ca_file),), proxies=proxies
    )
    with RegistryClient(config) as client:
        assert run_import(client, f"{host}/{registries.images.single_docker}").succeeded
    assert tunnel_proxy.targets == []


def test_plain_http_is_forwarded_and_guarded(registries: Registries) -> None:
    open_host = registries.open.host
    port = int(open_host.rsplit(":", 1)[1])
    proxy = Proxy(("127.0.0.1", port), tunnels=False).start()
    try:
        # An insecure registry is tried over https first: that CONNECT is refused.
        with_password = proxy.url.replace("//", "//user:s3cret@")
        proxies = ProxyConfig.from_settings(with_password, with_password)
        table = {"plain.example": [PUBLIC_ADDRESS], "inside.example": ["192.168.1.1"]}
        config = ClientConfig(
            insecure_registries=("plain.example", "inside.example"), proxies=proxies
        )
        with RegistryClient(config, resolver=resolver(table)) as client:
            head = client.head_manifest(Repository("plain.example", "test/app"), "v1")
            refused = run_import(client, "inside.example/test/app:v1")
    finally:
        proxy.stop()
    assert head.digest == registries.images.digests[registries.images.single_docker]
    assert proxy.targets
    assert all(
        t.startswith(("GET http://plain.example/", "HEAD http://plain.example/"))
        for t in proxy.targets
    ), proxy.targets
    assert proxy.authorizations and all(a.startswith("Basic ") for a in proxy.authorizations)
    assert refused.reason == "Forbidden"
    assert "s3cret" not in refused.condition["message"]  # type: ignore[index]


def test_only_the_configured_proxy_is_dialled() -> None:
    from webhook.registry.guard import AddressGuard

    guard = AddressGuard((), proxies=("http://proxy.corp:3128",))
    guard.check_proxy("proxy.corp", 3128, "http://proxy.corp:3128")
    with pytest.raises(AddressRefused, match="not one the operator configured"):
        guard.check_proxy("elsewhere.corp", 3128, "http://elsewhere.corp:3128")
