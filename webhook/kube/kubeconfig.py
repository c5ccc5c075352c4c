"""Which API server, and how to authenticate to it, for the webhook's thin list/watch client
(webhook.kube.listwatch): the rules, over plain data (kubeconfig documents, the environment).

kubectl's merge rules for a `$KUBECONFIG` list (the first file to name a cluster, user or
context wins; the first current-context wins; a relative path is relative to the file that
holds it), then the context's cluster and user. What the thin client cannot do (an exec
plugin, an auth provider, a password, impersonation, a proxy) raises `Unsupported` with the
reason, and the caller uses the kubernetes client instead, as before: correctness first.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Keys the thin client reads, and keys it may ignore (they change nothing it does). Any
# other key of the context's cluster or user is a feature it would get wrong by ignoring it.
CLUSTER_KEYS = frozenset(
    {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify"}
    | {"tls-server-name"}
)
CLUSTER_IGNORED = frozenset({"extensions", "disable-compression"})
USER_KEYS = frozenset(
    {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key"}
    | {"client-key-data"}
)
USER_IGNORED = frozenset({"extensions"})
# Paths in a kubeconfig, resolved against the directory of the file that holds them.
PATH_KEYS = frozenset({"certificate-authority", "client-certificate", "client-key", "tokenFile"})


class Unsupported(Exception):
    """The configuration needs what only the kubernetes client does; the message says what."""


@dataclass(frozen=True)
class RestConfig:
    """One API server and one identity. Secrets stay out of repr (and so out of logs)."""

    server: str  # scheme://host[:port], no trailing slash
    ca_file: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    cert_data: str | None = field(default=None, repr=False)  # PEM
    key_file: str | None = None
    key_data: str | None = field(default=None, repr=False)  # PEM
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None  # read again now and then: bound tokens rotate


def merge(documents: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """One kubeconfig from (directory, document) pairs in $KUBECONFIG order, as kubectl
    merges them; relative paths are made absolute against their own file's directory.
    A document that is not a mapping (an empty file) adds nothing."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    for directory, doc in documents:
        if not isinstance(doc, Mapping):
            continue  # an empty file
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(section) or []:
                if not isinstance(entry, Mapping) or not entry.get("name"):
                    continue
                body = entry.get(inner) or {}
                if isinstance(body, Mapping):
                    merged[section].setdefault(str(entry["name"]), _absolute(body, directory))
        if not merged["current-context"] and doc.get("current-context"):
            merged["current-context"] = str(doc["current-context"])
    return merged


def _absolute(body: Mapping[str, Any], directory: str) -> dict[str, Any]:
    out = dict(body)
    for key in PATH_KEYS & out.keys():
        value = out[key]
        if isinstance(value, str) and value and not os.path.isabs(value):
            out[key] = os.path.join(directory, value)
    return out


def from_kubeconfig(
    merged: Mapping[str, Any], context: str | None, environ: Mapping[str, str]
) -> RestConfig:
    """The thin client's configuration for `context` (else the current one) of a merged
    kubeconfig. Raises Unsupported when the kubernetes client must do it instead."""
    name = context or merged.get("current-context") or ""
    ctx = merged["contexts"].get(name)
    if not isinstance(ctx, Mapping):
        raise Unsupported(f"no context {name!r} in the kubeconfig")
    cluster = merged["clusters"].get(str(ctx.get("cluster") or ""))
    if not isinstance(cluster, Mapping) or not cluster.get("server"):
        raise Unsupported(f"context {name!r} names no cluster with a server")
    user = merged["users"].get(str(ctx.get("user") or ""), {})
    _only(cluster, CLUSTER_KEYS | CLUSTER_IGNORED, "cluster")
    _only(user, USER_KEYS | USER_IGNORED, "user")
    server = str(cluster["server"]).rstrip("/")
    _no_proxy_for(server, environ)
    return RestConfig(
        server=server,
        ca_file=_text(cluster, "certificate-authority"),
        ca_data=_pem(cluster, "certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        tls_server_name=_text(cluster, "tls-server-name"),
        cert_file=_text(user, "client-certificate"),
        cert_data=_pem(user, "client-certificate-data"),
        key_file=_text(user, "client-key"),
        key_data=_pem(user, "client-key-data"),
        # A token in the file wins over tokenFile, as in client-go and the kubernetes client.
        token=_text(user, "token"),
        token_file=None if user.get("token") else _text(user, "tokenFile"),
    )


def in_cluster(environ: Mapping[str, str], directory: str = SERVICE_ACCOUNT_DIR) -> RestConfig:
    """A pod's API server and service account (its CA and its bound, rotating token)."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ValueError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    _no_proxy_for(server, environ)
    return RestConfig(
        server=server,
        ca_file=os.path.join(directory, "ca.crt"),
        token_file=os.path.join(directory, "token"),
    )


def _only(section: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(k for k in section if k not in known and section[k] not in (None, "", {}))
    if unknown:
        raise Unsupported(f"the kubeconfig's {what} uses {', '.join(unknown)}")


def _no_proxy_for(server: str, environ: Mapping[str, str]) -> None:
    """The kubernetes client goes through $HTTPS_PROXY (or $HTTP_PROXY for http://) unless
    $NO_PROXY exempts the server; the thin client talks to it directly, so it steps aside."""
    parts = urlsplit(server)
    scheme = parts.scheme or "https"
    proxy = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
    if not proxy:
        return
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    # The standard library's own $NO_PROXY rule (typeshed does not list it).
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not bypass(parts.netloc, {"no": no_proxy}):
        raise Unsupported(f"${scheme.upper()}_PROXY applies to {parts.netloc}")


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    return str(value) if value else None


def _pem(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unsupported(f"{key} is not base64 of PEM text") from None
