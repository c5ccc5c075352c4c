"""Registry credentials from Kubernetes pull secrets (pure: plain dicts in, credentials out).

Reads `kubernetes.io/dockerconfigjson` (`{"auths": {KEY: ENTRY}}` under `.dockerconfigjson`) and
the older `kubernetes.io/dockercfg` (`{KEY: ENTRY}` under `.dockercfg`) Secrets, as the API
server returns them (values base64 encoded under `data`). An ENTRY holds either `auth`
(base64 of `user:password`) or `username` and `password`.

KEY names a registry the way `docker login` or `kubectl create secret docker-registry` wrote
it: `quay.io`, `registry.example.com:5000`, `https://index.docker.io/v1/`, and sometimes a
repository prefix (`quay.io/myorg`) or a wildcard host (`*.example.com`), which the kubelet
also understands. Matching follows the kubelet: the host must match (a `*` matches one DNS
label), the port must be the same, and a path in the key must be a prefix of the
repository. All of Docker Hub's spellings are one registry.

Trust boundary: the caller passes only the Secrets of the ImageStream's own namespace (plus the
one global pull secret the operator configured). A stream must never import with another
namespace's credentials; this module cannot check that, because a Secret dict does not say
who may read it.

Credentials never appear in `repr`, logs or messages: `Credential.source` says where a
credential came from ("secret myns/quay-pull") so that a message can name the secret instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKERCFG_TYPE = "kubernetes.io/dockercfg"
EXCLUDE_ANNOTATION = "openshift.io/image.excludeSecret"

DOCKER_HUB = "docker.io"
# Every name under which Docker Hub's credentials are stored or its API is reached.
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True, slots=True)
class Credential:
    """A username and password for one registry; `source` names the secret it came from."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        # Never show the password, even in a traceback or a debugger.
        return f"Credential(username={self.username!r}, source={self.source!r})"


def identity(credential: Credential | None) -> str:
    """Who a request goes as, for keys of what is cached per identity (tokens, answers):
    the username and a hash of the password, so that a key holds no secret; "" for
    anonymous."""
    if credential is None:
        return ""
    secret = hashlib.sha256(credential.password.encode()).hexdigest()[:16]
    return f"{credential.username}:{secret}"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One parsed key of a docker config: host pattern, port, path prefix."""

    host: str
    port: str
    path: str
    credential: Credential


def canonical_registry(host: str) -> str:
    """Lowercase a registry `host[:port]` and fold Docker Hub's aliases into `docker.io`."""
    host = host.strip().lower()
    if host in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return host


def _split_key(key: str) -> tuple[str, str, str]:
    """`https://Host:5000/v1/org` → ("host", "5000", "org").

    The `/v1/` and `/v2/` suffixes are API versions, not repositories, so they are dropped.
    """
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    hostport, _, path = text.partition("/")
    path = path.strip("/")
    if path in ("v1", "v2") or path.startswith(("v1/", "v2/")):
        path = path[3:] if len(path) > 2 else ""
    host, port = _split_port(hostport.lower())
    if host in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    return host, port, path


def _split_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):  # [ipv6]:port
        end = hostport.find("]")
        rest = hostport[end + 1 :]
        return hostport[: end + 1], rest[1:] if rest.startswith(":") else ""
    host, _, port = hostport.partition(":")
    return host, port


def _host_matches(pattern: str, host: str) -> bool:
    """Kubelet rule: same number of DNS labels, `*` matches exactly one label."""
    if "*" not in pattern:
        return pattern == host
    pattern_labels = pattern.split(".")
    host_labels = host.split(".")
    if len(pattern_labels) != len(host_labels):
        return False
    return all(p in ("*", h) for p, h in zip(pattern_labels, host_labels, strict=True))


def _path_matches(prefix: str, repository: str) -> bool:
    if not prefix:
        return True
    return repository == prefix or repository.startswith(prefix + "/")


def _decode_entry(entry: Any, source: str) -> Credential | None:
    if not isinstance(entry, Mapping):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            return None
        return Credential(username, password, source)
    name = entry.get("username")
    secret = entry.get("password")
    if isinstance(name, str) and name and isinstance(secret, str):
        return Credential(name, secret, source)
    return None


def _secret_payload(secret: Mapping[str, Any], key: str) -> Any:
    """The JSON under `data[key]` (base64) or, for hand-written objects, `stringData[key]`."""
    data = secret.get("data") or {}
    raw: str | None = None
    if isinstance(data, Mapping) and isinstance(data.get(key), str):
        try:
            raw = base64.b64decode(data[key]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    else:
        string_data = secret.get("stringData") or {}
        if isinstance(string_data, Mapping) and isinstance(string_data.get(key), str):
            raw = string_data[key]
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def is_excluded(secret: Mapping[str, Any]) -> bool:
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(EXCLUDE_ANNOTATION, "")).lower() == "true"


def _secret_name(secret: Mapping[str, Any]) -> str:
    metadata = secret.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    name = metadata.get("name") or "?"
    return f"secret {namespace}/{name}" if namespace else f"secret {name}"


def entries_from_secret(secret: Mapping[str, Any]) -> list[_Entry]:
    """Parse one Secret; anything malformed, excluded or of another type yields nothing."""
    if not isinstance(secret, Mapping) or is_excluded(secret):
        return []
    kind = secret.get("type")
    if kind == DOCKERCONFIGJSON_TYPE:
        payload = _secret_payload(secret, ".dockerconfigjson")
        auths = payload.get("auths") if isinstance(payload, Mapping) else None
    elif kind == DOCKERCFG_TYPE:
        auths = _secret_payload(secret, ".dockercfg")
    else:
        return []
    if not isinstance(auths, Mapping):
        return []
    source = _secret_name(secret)
    entries = []
    for key, value in auths.items():
        if not isinstance(key, str) or not key.strip():
            continue
        credential = _decode_entry(value, source)
        if credential is None:
            continue
        host, port, path = _split_key(key)
        if host:
            entries.append(_Entry(host, port, path, credential))
    return entries


def _specificity(entry: _Entry) -> tuple[int, int]:
    # Longer repository prefix first, then exact hosts before wildcards.
    depth = len(entry.path.split("/")) if entry.path else 0
    return (-depth, entry.host.count("*"))


class Keyring:
    """Credentials for the registries that one ImageStream's namespace can pull from.

    Build one per import from the namespace's pull secrets (in the order they should win)
    and the optional global pull secret, which always loses to a namespace secret.
    """

    def __init__(
        self,
        secrets: Iterable[Mapping[str, Any]] = (),
        global_secret: Mapping[str, Any] | None = None,
    ) -> None:
        namespace_entries: list[_Entry] = []
        for secret in secrets:
            namespace_entries.extend(entries_from_secret(secret))
        global_entries = entries_from_secret(global_secret) if global_secret else []
        # Stable sort: within one tier, more specific keys first, secrets in the order given.
        self._tiers = [
            sorted(namespace_entries, key=_specificity),
            sorted(global_entries, key=_specificity),
        ]

    def candidates(self, registry: str, repository: str = "") -> list[Credential]:
        """Every matching credential, best first (namespace secrets before the global one)."""
        host, port = _split_port(canonical_registry(registry))
        found: list[Credential] = []
        for tier in self._tiers:
            for entry in tier:
                if (
                    entry.port == port
                    and _host_matches(entry.host, host)
                    and _path_matches(entry.path, repository)
                    and entry.credential not in found
                ):
                    found.append(entry.credential)
        return found

    def lookup(self, registry: str, repository: str = "") -> Credential | None:
        """The credential to use for `registry` (`host[:port]`) and `repository`, if any."""
        matches = self.candidates(registry, repository)
        return matches[0] if matches else None

    def __bool__(self) -> bool:
        return any(self._tiers)

    def __repr__(self) -> str:
        count = sum(len(tier) for tier in self._tiers)
        return f"Keyring({count} entries)"
