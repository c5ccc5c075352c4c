"""Which HTTP(S) proxy a registry request goes through: the operator's settings, pure.

The controller takes proxies from its flags (`--https-proxy`, `--http-proxy`, `--no-proxy`,
whose defaults are the conventional HTTPS_PROXY / HTTP_PROXY / NO_PROXY variables of its
own environment), never from what a registry or an ImageStream says: only a proxy the
operator configured is ever dialled. The address guard still judges the registry behind it
(`guard`): a proxy does not let an ImageStream reach what it could not reach directly.

NO_PROXY follows the common reading (curl, Go's httpproxy): comma-separated entries, each a
host name that also matches its subdomains (`example.com`, `.example.com`), an IP address, a
CIDR block, any of them with `:PORT` to match that port only, or `*` for every host.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": 80, "https": 443}


class ProxyError(ValueError):
    """A proxy setting that cannot be used; the message names it (without its password)."""


@dataclass(frozen=True, slots=True)
class NoProxyEntry:
    host: str  # "" for a CIDR entry or "*"
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


def parse_no_proxy(text: str | Iterable[str]) -> tuple[NoProxyEntry, ...]:
    """NO_PROXY's entries; `text` is the variable's value or already split entries."""
    items = text.split(",") if isinstance(text, str) else [i for t in text for i in t.split(",")]
    entries: list[NoProxyEntry] = []
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            entries.append(NoProxyEntry("*", None, None))
            continue
        host, port = _split_entry(item)
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            entries.append(NoProxyEntry(host.lstrip(".").rstrip("."), None, port))
        else:
            entries.append(NoProxyEntry("", network, port))
    return tuple(entries)


def _split_entry(item: str) -> tuple[str, int | None]:
    """`host`, `host:443`, `10.0.0.0/8`, `[::1]:5000`, `::1` → (host, port)."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, port = item.split(":")
    else:
        host, port = item, ""  # no port, or a bare IPv6 address
    if port and not port.isdigit():
        raise ProxyError(f"NO_PROXY entry {item!r}: the port is not a number")
    return host, (int(port) if port else None)


def redacted(url: str) -> str:
    """A proxy URL for messages and logs: scheme, host and port, never its user or password."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


def proxy_address(url: str) -> tuple[str, int]:
    """(host, port) the proxy URL dials."""
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[parts.scheme]


def checked_proxy_url(url: str, setting: str) -> str:
    """`url` if it names a usable proxy (http:// or https://, a host, an optional port),
    else ProxyError naming `setting` (the flag or variable it came from)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # `proxy.corp:3128`, as curl and Go take it
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise ProxyError(f"{setting}: {redacted(text)} is not a proxy URL") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ProxyError(
            f"{setting}: {redacted(text)} is not an http:// or https:// proxy"
            " (SOCKS proxies are not supported)"
        )
    if not parts.hostname:
        raise ProxyError(f"{setting}: {redacted(text)} names no host")
    if parts.path not in ("", "/") or parts.query:
        raise ProxyError(f"{setting}: {redacted(text)} has a path; a proxy is scheme://host:port")
    return text


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The operator's proxies: `https` for https:// registries, `http` for http:// ones."""

    https: str | None = None
    http: str | None = None
    no_proxy: tuple[NoProxyEntry, ...] = ()

    @classmethod
    def from_settings(
        cls, https: str | None, http: str | None, no_proxy: str | Iterable[str] = ""
    ) -> ProxyConfig:
        """From flag or environment values ("" or None: no proxy); raises ProxyError."""
        return cls(
            checked_proxy_url(https, "HTTPS proxy") if https else None,
            checked_proxy_url(http, "HTTP proxy") if http else None,
            parse_no_proxy(no_proxy),
        )

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(url for url in (self.https, self.http) if url)

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL a request to `url` goes through, or None to connect directly."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None:
            return None
        host = (parts.hostname or "").rstrip(".").lower()
        port = parts.port or _DEFAULT_PORTS[scheme]
        if any(entry.matches(host, port) for entry in self.no_proxy):
            return None
        return proxy
