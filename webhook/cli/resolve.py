"""Offline resolution: manifests in, manifests with pinned digests out.

For pipelines that want digests in Git. The same rules as admission (model.resolution), a
namespace from `metadata.namespace` or the default given. Every document is written back as
it was read but for the image values pinned (a document is dumped anew only when one of its
image fields is neither a plain nor a quoted scalar). Every image left without a digest that
should have one is recorded (`Resolved.unpinned`, with its file line), which `--strict`
turns into a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jsonpatch

from webhook.cli.manifests import Document, documents, dump
from webhook.model.reference import Reference
from webhook.model.resolution import StreamLookup, candidate, resolve_image
from webhook.model.workloads import POD_SPEC_PATHS, pod_images, resolve_names_forced

# `resolve --strict`: an image that should have been pinned was not (1 is any other error,
# 2 a usage error, as argparse has it).
EXIT_UNPINNED = 3


@dataclass(frozen=True)
class Unpinned:
    """An image that stays without a digest although a stream should have pinned it."""

    where: str  # FILE:LINE of the image field
    subject: str  # KIND/NAME: CONTAINER
    image: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.subject}: {self.image} not pinned: {self.reason}"


@dataclass
class Resolved:
    text: str
    images_resolved: int = 0
    warnings: list[str] = field(default_factory=list)
    unpinned: list[Unpinned] = field(default_factory=list)


def resolve_manifests(
    text: str, streams: StreamLookup, default_namespace: str, source: str = "<stdin>"
) -> Resolved:
    """Pin what the streams pin. `source` names the input in messages. Raises
    manifests.ManifestError for a document that is not YAML."""
    result = Resolved(text="")
    pieces = [
        _resolve_document(doc, streams, default_namespace, source, result)
        for doc in documents(text, source)
    ]
    result.text = "---\n".join(pieces) if len(pieces) > 1 else "".join(pieces)
    return result


def _resolve_document(
    doc: Document, streams: StreamLookup, default_namespace: str, source: str, result: Resolved
) -> str:
    obj = doc.obj
    if not isinstance(obj, Mapping) or obj.get("kind") not in POD_SPEC_PATHS:
        return doc.text
    kind = str(obj["kind"])
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = str(metadata.get("namespace") or default_namespace)
    name = f"{kind}/{metadata.get('name', '?')}"
    force = resolve_names_forced(obj, kind)
    pinned_at: dict[str, str] = {}
    for image in pod_images(obj, kind):
        pinned, warning = resolve_image(image.image, namespace, streams, force)
        where = f"{source}:{doc.line_of(image.pointer)}"
        subject = f"{name}: {image.container}"
        if pinned is not None and pinned != image.image:
            pinned_at[image.pointer] = pinned
        if warning:
            result.warnings.append(f"{where}: {subject}: {warning}")
        if pinned is None and (warning or candidate(image.image) is not None):
            reason = warning or _no_stream(image.image, namespace, streams)
            result.unpinned.append(Unpinned(where, subject, image.image, reason))
    if not pinned_at:
        return doc.text
    result.images_resolved += len(pinned_at)
    # In place when the image fields allow it: the document keeps its comments and layout.
    text = doc.with_scalars(pinned_at)
    if text is not None:
        return text
    patch = [{"op": "replace", "path": p, "value": v} for p, v in pinned_at.items()]
    return dump(jsonpatch.apply_patch(obj, patch, in_place=True))


def _no_stream(image: str, namespace: str, streams: StreamLookup) -> str:
    """Why a short name found no stream to pin it."""
    ref: Reference | None = candidate(image)
    name = ref.last_component if ref else image
    if streams.get(namespace, name) is None:
        return f"no image stream {namespace}/{name}"
    return f"image stream {namespace}/{name} does not have lookupPolicy.local"
