"""OCI manifests, pure: media types, manifests and index descriptors, platforms, digests.

The four manifest types an import accepts (OCI image index and manifest, Docker manifest list
and schema 2 manifest), parsed from bytes already checked against their digest; the platforms
an index lists and the entry a runtime on a platform would pull.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.model.reference import is_valid_digest
from webhook.registry.errors import InternalError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | IMAGE_MEDIA_TYPES
# Indexes first: without them a registry may answer a multi-arch tag with one platform.
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm"}
# Variants that a runtime assumes when the index leaves them out.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def normalize_platform(os_name: str, architecture: str, variant: str = "") -> Platform:
    """Lowercase, and fold the usual aliases (`x86_64` → `amd64`, `aarch64` → `arm64`)."""
    arch = architecture.strip().lower()
    return Platform(os_name.strip().lower(), _ARCH_ALIASES.get(arch, arch), variant.strip().lower())


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_attestation(self) -> bool:
        """BuildKit's provenance/SBOM entries: listed in an index, but not runnable images."""
        if self.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            return True
        return self.platform is not None and self.platform == Platform("unknown", "unknown")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A fetched manifest: its verified digest, media type, raw bytes and, for an index, the
    manifests it lists."""

    digest: str
    media_type: str
    body: bytes = field(repr=False)
    manifests: tuple[Descriptor, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def size(self) -> int:
        return len(self.body)

    def platforms(self) -> tuple[Platform, ...]:
        return index_platforms(self.manifests)


def _media_type_of(document: Mapping[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";", 1)[0].strip().lower()
    if header in MANIFEST_MEDIA_TYPES:
        return header
    # OCI allows leaving mediaType out; the shape then tells the kind.
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), Mapping) and isinstance(document.get("layers"), list):
        return OCI_MANIFEST
    if document.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    return header or "unknown"


def _parse_descriptor(item: Any) -> Descriptor:
    if not isinstance(item, Mapping):
        raise InternalError("an index entry is not a JSON object")
    digest = item.get("digest")
    if not isinstance(digest, str) or not is_valid_digest(digest):
        raise InternalError(f"an index entry has an invalid digest: {digest!r}")
    media_type = item.get("mediaType")
    size = item.get("size")
    platform = None
    raw_platform = item.get("platform")
    if isinstance(raw_platform, Mapping):
        platform = normalize_platform(
            str(raw_platform.get("os", "")),
            str(raw_platform.get("architecture", "")),
            str(raw_platform.get("variant", "") or ""),
        )
    annotations = item.get("annotations")
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) else "",
        digest=digest,
        size=size if isinstance(size, int) and not isinstance(size, bool) else -1,
        platform=platform,
        annotations=(
            {str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, Mapping)
            else {}
        ),
    )


def parse_manifest(body: bytes, content_type: str | None, digest: str) -> Manifest:
    """Parse manifest bytes (already digest-verified) of one of the four accepted types."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InternalError(f"manifest {digest} is not valid JSON: {error}") from None
    except RecursionError:
        raise InternalError(f"manifest {digest} is JSON nested too deep to read") from None
    if not isinstance(document, Mapping):
        raise InternalError(f"manifest {digest} is not a JSON object")
    media_type = _media_type_of(document, content_type)
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise InternalError(
            f"manifest {digest} has unsupported media type {media_type!r}; supported: OCI image"
            " index and manifest, Docker manifest list and schema 2 manifest"
        )
    manifests: tuple[Descriptor, ...] = ()
    if media_type in INDEX_MEDIA_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise InternalError(f"index {digest} has no manifests list")
        manifests = tuple(_parse_descriptor(item) for item in entries)
    return Manifest(digest=digest, media_type=media_type, body=body, manifests=manifests)


def index_platforms(descriptors: Iterable[Descriptor]) -> tuple[Platform, ...]:
    """The runnable platforms of an index, in index order, without attestations or repeats."""
    seen: list[Platform] = []
    for descriptor in descriptors:
        if (
            descriptor.platform
            and not descriptor.is_attestation
            and descriptor.platform not in seen
        ):
            seen.append(descriptor.platform)
    return tuple(seen)


def choose_platform(descriptors: Sequence[Descriptor], wanted: Platform) -> Descriptor | None:
    """The index entry a runtime on `wanted` would pull, or None.

    OS and architecture must match. With a wanted variant, an entry with that variant (or
    none, when the wanted variant is the architecture's default) wins; without one, an entry
    with no variant or the default variant wins over other variants; otherwise index order.
    """
    default_variant = _DEFAULT_VARIANT.get(wanted.architecture, "")
    wanted_variant = wanted.variant or default_variant
    best: tuple[int, Descriptor] | None = None
    for descriptor in descriptors:
        platform = descriptor.platform
        if platform is None or descriptor.is_attestation:
            continue
        if platform.os != wanted.os or platform.architecture != wanted.architecture:
            continue
        variant = platform.variant or default_variant
        if variant == wanted_variant:
            rank = 0
        elif wanted.variant:
            continue  # a specific variant was asked for and this is another one
        else:
            rank = 1
        if best is None or rank < best[0]:
            best = (rank, descriptor)
    return best[1] if best else None


def compute_digest(body: bytes, algorithm: str = "sha256") -> str:
    hasher = _HASHES.get(algorithm)
    if hasher is None:
        raise InternalError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hasher(body).hexdigest()}"


def digest_matches(body: bytes, digest: str) -> bool:
    algorithm = digest.split(":", 1)[0]
    return algorithm in _HASHES and compute_digest(body, algorithm) == digest
