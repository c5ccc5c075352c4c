"""Registry hosts and the address guard: where a registry's API is, and whom we may dial.

An ImageStream is user input, so by default the controller refuses to connect to loopback,
link-local (cloud metadata), private and other non-global addresses unless the operator
allowed that `host[:port]`. The check happens on every connection (registry, token realm,
redirects) where the socket is opened, on the addresses actually dialled, so DNS rebinding
between a check and the connect does not get around it: `guarded_adapter` is the `requests`
adapter that does this, `AddressGuard` the rule. Its connections also bound the time a
response's headers may take as a whole (the read timeout), not only each read.

Through a proxy (`proxies`), the socket goes to the proxy, which must be one the operator
configured; the registry behind it is still judged: a CONNECT tunnel is opened to the address
the guard approved, not to the name (so the proxy's own resolver cannot be steered
elsewhere), and TLS still verifies the name. A plain-HTTP request through a proxy names the
host in its request line, so that host is checked before the request is sent.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import HTTPResponse
from urllib3.util import connection as urllib3_connection

from webhook.registry.bodies import Watchdog, shut_down
from webhook.registry.credentials import canonical_registry
from webhook.registry.errors import AddressRefused
from webhook.registry.proxies import ProxyConfig, proxy_address, redacted

DOCKER_HUB_API_HOST = "registry-1.docker.io"


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

    def __init__(
        self,
        allowed: Iterable[str] = (),
        resolver: Resolver = system_resolver,
        proxies: Iterable[str] = (),
    ) -> None:
        self.allowed = tuple(allowed)
        self._resolver = resolver
        # (host, port) of the configured proxies: dialled without the check (the operator
        # chose them; they are usually internal), and nothing else is dialled as a proxy.
        self.proxies = frozenset(proxy_address(url) for url in proxies)

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

    def tunnel_target(self, host: str, port: int) -> str:
        """Where a CONNECT through a proxy goes for `host:port`: an allowed registry by its
        name (the operator vouched for it, and the proxy may be the only one that can
        resolve it), anything else by the first address `check` approved."""
        host = host.strip("[]").rstrip(".")
        if host_in(host, self.allowed, port):
            return host
        return self.check(host, port)[0].split("%", 1)[0]

    def check_proxy(self, host: str, port: int | None, proxy: object) -> None:
        """Refuses a proxy connection that is not to one of the configured proxies."""
        if (host.strip("[]").lower(), port) not in self.proxies:
            raise AddressRefused(
                f"refusing to use {redacted(str(proxy))} as a proxy: it is not one the"
                " operator configured"
            )


# ---------------------------------------------------------------------------------------------
# The HTTP edge: guarded connections


def _guarded_socket(conn: HTTPConnection, guard: AddressGuard) -> socket.socket:
    """urllib3's `_new_conn`, dialling only the addresses the guard approved (or one of the
    configured proxies, whose target is checked in `_tunnel` or `send`)."""
    try:
        if conn.proxy is not None:
            guard.check_proxy(conn.host, conn.port, conn.proxy)
            addresses = system_resolver(conn.host, conn.port or 80)
        else:
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


def _headers_in_time(conn: HTTPConnection, get: Callable[[], HTTPResponse]) -> HTTPResponse:
    """`get()` (the response's status line and headers), within the read timeout in all.

    A socket timeout bounds each read, so a registry that sends a header byte every few
    seconds would hold the worker for as long as it likes (http.client reads up to 100
    header lines of 64 KiB each)."""
    budget = conn.timeout
    if not isinstance(budget, int | float):
        return get()  # no timeout was asked for
    # A socket timeout, so that urllib3 and requests report a read timeout.
    late = TimeoutError(f"no complete response headers after {budget}s")
    with Watchdog(budget, lambda: shut_down(conn.sock)) as dog:
        try:
            response = get()
        except Exception:
            if dog.fired:
                raise late from None
            raise
    if dog.fired:
        response.close()  # headers that parsed may still have been cut short
        raise late
    return response


def guarded_adapter(
    guard: AddressGuard,
    proxies: ProxyConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
    *,
    hosts: int = DEFAULT_POOLSIZE,
    per_host: int = DEFAULT_POOLSIZE,
) -> HTTPAdapter:
    """The `requests` adapter whose every connection the guard approves; `ssl_context`, when
    given, is what verified TLS trusts (`trust_context`); `proxies` are the operator's.
    Connections are kept alive for `hosts` hosts, `per_host` each (those beyond are closed
    after their request, so each request past them dials and handshakes anew)."""

    # Classes per adapter: urllib3 builds connections from a class, and the only per-pool
    # hook that does not disturb its pool keys is the class itself.
    # `reading_socket`: the socket as connected (TLS-wrapped), kept past close() for
    # bodies.read_limited, which shuts it down to end a body read that takes too long.
    class GuardedHTTPConnection(HTTPConnection):
        reading_socket: socket.socket | None = None

        def _new_conn(self) -> socket.socket:
            return _guarded_socket(self, guard)

        def connect(self) -> None:
            super().connect()
            self.reading_socket = self.sock

        def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's
            return _headers_in_time(self, super().getresponse)

        def _tunnel(self) -> None:
            # CONNECT to the approved address; the name comes back for TLS (SNI and the
            # certificate check) and the Host header, which read _tunnel_host afterwards.
            name = self._tunnel_host
            assert name is not None and self._tunnel_port is not None
            self._tunnel_host = guard.tunnel_target(name, self._tunnel_port)
            try:
                super()._tunnel()  # http.client's, as urllib3 calls it
            finally:
                self._tunnel_host = name

    class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
        pass  # the methods above, over HTTPSConnection's (TLS): it comes next in the MRO

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    pools = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

        def build_connection_pool_key_attributes(
            self, request: PreparedRequest, verify: bool | str, cert: Any = None
        ) -> Any:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(
                request, verify, cert
            )
            # Only for verified TLS: urllib3 sets the verify mode on the context it is
            # given, so an unverified pool must never share this one (requests does the
            # same with its own default context).
            if verify is True and ssl_context is not None:
                pool_kwargs["ssl_context"] = ssl_context
            return host_params, pool_kwargs

        def send(
            self,
            request: PreparedRequest,
            stream: bool = False,
            timeout: Any = None,
            verify: bool | str = True,
            cert: Any = None,
            proxies: Mapping[str, str] | None = None,
        ) -> Response:
            url = request.url or ""
            chosen = proxies_for(url)
            if chosen and url.startswith("http://"):
                # Forwarded, not tunnelled: the proxy connects to the name in the request
                # line, so judge that name now (it cannot be pinned to an address here).
                parts = urllib.parse.urlsplit(url)
                guard.check(parts.hostname or "", parts.port or 80)
            return super().send(request, stream, timeout, verify, cert, chosen)

    def proxies_for(url: str) -> dict[str, str]:
        # Never the proxies of the call (or of the environment): only the configured ones.
        proxy = proxies.proxy_for(url) if proxies is not None else None
        return {url.split("://", 1)[0]: proxy} if proxy else {}

    return GuardedAdapter(max_retries=0, pool_connections=hosts, pool_maxsize=per_host)


def trust_context(ca_files: Iterable[str]) -> ssl.SSLContext | None:
    """The TLS trust of verified connections: the roots requests trusts by default (certifi's
    bundle) plus every CA certificate in `ca_files`; None when there are none to add (then
    requests' own default context is used). Raises ValueError for a file that holds none."""
    files = tuple(ca_files)
    if not files:
        return None
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    context.load_verify_locations(DEFAULT_CA_BUNDLE_PATH)
    for path in files:
        try:
            context.load_verify_locations(cafile=path)
        except FileNotFoundError:
            raise ValueError(f"registry CA file {path}: no such file") from None
        except ssl.SSLError:
            raise ValueError(f"registry CA file {path}: no PEM certificate in it") from None
    return context
