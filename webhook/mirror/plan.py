"""Reference policy `Local`, pure: the local registry's names, manifest trees and the copy plan.

A copy makes `<local registry>/<namespace>/<stream>` hold a tag's image: its manifest tree
(an index and every manifest it lists) and the blobs they reference. `plan_copy` orders what
the local repository lacks so that nothing is published before its content: children before
parents, blobs before the manifest that needs them, the index last; a blob another repository
of the local registry holds is mounted instead of copied. An interruption anywhere leaves only
blobs and complete child manifests behind, which the next run finds present and skips.
`copier.Mirrorer` runs the plan against the registries.

Every stream's `status.dockerImageRepository` is `local_repository(...)` (the controller writes
it with `with_local_repository`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.model.reference import is_valid_digest
from webhook.model.streams import MIRRORED
from webhook.registry.client import Repository
from webhook.registry.credentials import Credential
from webhook.registry.errors import InternalError
from webhook.registry.manifests import Manifest

FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


@dataclass(frozen=True, slots=True)
class LocalRegistry:
    """The in-cluster registry: `host` is the name pods pull from (written into status);
    `endpoint` where the controller pushes, when that differs (a Service DNS name)."""

    host: str
    endpoint: str = ""
    insecure: bool = False
    credential: Credential | None = None

    @property
    def push_host(self) -> str:
        return self.endpoint or self.host

    def repository(self, namespace: str, stream: str) -> str:
        """`status.dockerImageRepository` of stream `namespace/stream`."""
        return local_repository(self.host, namespace, stream)

    def target(self, namespace: str, stream: str) -> Repository:
        return Repository(self.push_host, f"{namespace}/{stream}", self.credential, self.insecure)


def local_repository(local_registry: str, namespace: str, stream: str) -> str:
    return f"{local_registry.strip().rstrip('/')}/{namespace}/{stream}"


def with_local_repository(obj: Mapping[str, Any], repository: str) -> tuple[dict[str, Any], bool]:
    """The stream with `status.dockerImageRepository` set; and whether that changed it.

    A new repository (the local registry moved) holds none of the copies yet: every
    `Mirrored` condition goes, so resolution falls back to the source until each tag is
    copied again (`streams.is_mirrored` relies on this)."""
    status = dict(obj.get("status") or {})
    if status.get("dockerImageRepository") == repository:
        return dict(obj), False
    status["dockerImageRepository"] = repository
    status["tags"] = [_without_mirrored(entry) for entry in status.get("tags") or []]
    return {**obj, "status": status}, True


def _without_mirrored(entry: Mapping[str, Any]) -> dict[str, Any]:
    kept = [c for c in entry.get("conditions") or [] if c.get("type") != MIRRORED]
    result = {k: v for k, v in entry.items() if k != "conditions"}
    return {**result, "conditions": kept} if kept else result


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""
    foreign: bool = False  # a non-distributable layer: registries do not hold it


@dataclass(frozen=True, slots=True)
class Node:
    """A manifest to copy: its exact bytes, the blobs it needs, the manifests it lists."""

    digest: str
    media_type: str
    body: bytes = field(repr=False)
    blobs: tuple[Blob, ...] = ()
    children: tuple[Node, ...] = ()

    def walk(self) -> Iterator[Node]:
        """Every node once, children before parents (the order a push needs)."""
        seen: set[str] = set()

        def visit(node: Node) -> Iterator[Node]:
            if node.digest in seen:
                return
            seen.add(node.digest)
            for child in node.children:
                yield from visit(child)
            yield node

        yield from visit(self)

    def all_blobs(self) -> list[Blob]:
        found: dict[str, Blob] = {}
        for node in self.walk():
            for blob in node.blobs:
                found.setdefault(blob.digest, blob)
        return list(found.values())


def image_blobs(body: bytes, digest: str) -> tuple[Blob, ...]:
    """The config and layers an image manifest (OCI or Docker schema 2) references."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InternalError(f"manifest {digest} is not valid JSON") from None
    if not isinstance(document, Mapping):
        raise InternalError(f"manifest {digest} is not a JSON object")
    entries: list[Any] = []
    if document.get("config") is not None:
        entries.append(document["config"])
    layers = document.get("layers") or []
    if not isinstance(layers, list):
        raise InternalError(f"manifest {digest}: layers is not a list")
    entries += layers
    blobs: list[Blob] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise InternalError(f"manifest {digest} has a descriptor that is not an object")
        blob_digest, size = entry.get("digest"), entry.get("size")
        if not isinstance(blob_digest, str) or not is_valid_digest(blob_digest):
            raise InternalError(f"manifest {digest} references an invalid digest {blob_digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InternalError(f"manifest {digest}: blob {blob_digest} has no valid size")
        media_type = str(entry.get("mediaType") or "")
        foreign = media_type in FOREIGN_LAYER_TYPES and bool(entry.get("urls"))
        blobs.append(Blob(blob_digest, size, media_type, foreign))
    return tuple(blobs)


def node_of(manifest: Manifest, children: Sequence[Node] = ()) -> Node:
    blobs = () if manifest.is_index else image_blobs(manifest.body, manifest.digest)
    return Node(manifest.digest, manifest.media_type, manifest.body, blobs, tuple(children))


@dataclass(frozen=True, slots=True)
class CopyBlob:
    blob: Blob


@dataclass(frozen=True, slots=True)
class MountBlob:
    blob: Blob
    source: str  # a repository path in the local registry that holds it


@dataclass(frozen=True, slots=True)
class PutManifest:
    digest: str
    media_type: str
    body: bytes = field(repr=False)
    reference: str = ""  # the digest, or a tag to point at it

    @property
    def is_tag(self) -> bool:
        return self.reference != self.digest


Step = CopyBlob | MountBlob | PutManifest


def manifests_to_probe(tree: Node, known: Collection[str]) -> list[str]:
    """Manifest digests of `tree` whose presence in the target is not known yet."""
    return [node.digest for node in tree.walk() if node.digest not in known]


def missing_nodes(tree: Node, present: Collection[str]) -> list[Node]:
    """The manifests of `tree` the target lacks, children before parents; a present
    manifest stands for everything below it."""
    seen: set[str] = set()
    missing: list[Node] = []

    def visit(node: Node) -> None:
        if node.digest in present or node.digest in seen:
            return
        seen.add(node.digest)
        for child in node.children:
            visit(child)
        missing.append(node)

    visit(tree)
    return missing


def blobs_to_probe(tree: Node, present: Collection[str]) -> list[Blob]:
    """Blobs needed by the manifests of `tree` that the target lacks (each once)."""
    found: dict[str, Blob] = {}
    for node in missing_nodes(tree, present):
        for blob in node.blobs:
            if not blob.foreign and blob.digest not in present:
                found.setdefault(blob.digest, blob)
    return list(found.values())


def plan_copy(
    tree: Node,
    present: Collection[str],
    homes: Mapping[str, str] | None = None,
    *,
    target_path: str = "",
    tag: str | None = None,
    tagged: str | None = None,
) -> list[Step]:
    """The steps that make the target repository hold `tree`.

    `present`: digests (blobs and manifests) the target already holds; a present manifest
    stands for everything below it. `homes`: blob digest → another repository of the same
    registry that holds it (mounted instead of copied). Blobs come before the manifest
    that references them and children before their index, so a manifest is never
    published before its content; with `tag`, the top manifest is also put under that tag
    unless `tagged` (the digest the tag has now) says it already points there.
    """
    homes = homes or {}
    steps: list[Step] = []
    done: set[str] = set(present)
    for node in missing_nodes(tree, present):
        for blob in node.blobs:
            if blob.foreign or blob.digest in done:
                continue
            done.add(blob.digest)
            home = homes.get(blob.digest)
            steps.append(MountBlob(blob, home) if home and home != target_path else CopyBlob(blob))
        done.add(node.digest)
        steps.append(PutManifest(node.digest, node.media_type, node.body, node.digest))
    if tag and tagged != tree.digest:
        steps.append(PutManifest(tree.digest, tree.media_type, tree.body, tag))
    return steps
