"""AdmissionReview in, AdmissionReview out: short image names → pinned digests.

The pipeline, as k8s-digester's handler has it: parse the review, skip what is not ours,
find the images, resolve each against the stream index, diff into a JSONPatch, answer.
Pure given a `StreamLookup`; the HTTP layer lives in app.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from webhook.model import reference
from webhook.model.streams import InvalidImageStream, StreamEntry, generation_stamps

RESOLVE_NAMES_ANNOTATION = "alpha.image.policy.openshift.io/resolve-names"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Where each kind keeps its pod spec, and where its pod template's metadata is.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}
_WORKLOAD_GROUPS = {"", "apps", "batch"}

# Controllers whose pods and children were resolved when their own template was written:
# resolving those one by one would mix digests within one rollout.
_BUILTIN_OWNERS = {
    ("apps", "ReplicaSet"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "ReplicationController"),
}


class BadReview(ValueError):
    """The request body is not an AdmissionReview v1 we can answer (HTTP 400)."""


class StreamLookup(Protocol):
    def get(self, namespace: str, name: str) -> StreamEntry | None: ...


@dataclass(frozen=True, slots=True)
class Image:
    """One container image field: its JSON pointer, container name and value."""

    pointer: str
    list_name: str
    container: str
    image: str


@dataclass(slots=True)
class Outcome:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- the pipeline -----------------------------------------------------------------------


def review(body: Any, streams: StreamLookup) -> dict[str, Any]:
    """Answer one AdmissionReview. Raises BadReview when `body` is not one."""
    request = parse_review(body)
    outcome = mutate(request, streams)
    return respond(request["uid"], outcome)


def parse_review(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != "admission.k8s.io/v1" or body.get("kind") != "AdmissionReview":
        raise BadReview("expected apiVersion admission.k8s.io/v1, kind AdmissionReview")
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise BadReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    return request


def mutate(request: Mapping[str, Any], streams: StreamLookup) -> Outcome:
    """The patch and warnings for one admission request (empty when not ours)."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, Mapping):
        return Outcome()
    if is_image_stream(request):
        old_stream = request.get("oldObject") if request.get("operation") == "UPDATE" else None
        return stamp_generations(obj, old_stream if isinstance(old_stream, Mapping) else None)
    kind = request_kind(request)
    if kind is None:
        return Outcome()
    if _controlled_by_builtin_workload(obj):
        return Outcome()
    namespace = request.get("namespace") or _metadata(obj).get("namespace") or ""
    old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
    return resolve_object(obj, kind, namespace, streams, old)


def resolve_object(
    obj: Mapping[str, Any],
    kind: str,
    namespace: str,
    streams: StreamLookup,
    old: Any = None,
) -> Outcome:
    """Resolve every candidate image of `obj`; on UPDATE, only images changed from `old`."""
    outcome = Outcome()
    force = resolve_names_forced(obj, kind)
    unchanged = images_by_container(old, kind) if isinstance(old, Mapping) else {}
    for image in pod_images(obj, kind):
        if unchanged.get((image.list_name, image.container)) == image.image:
            continue
        resolved, warning = resolve_image(image.image, namespace, streams, force)
        if warning:
            outcome.warnings.append(f"{image.container}: {warning}")
        if resolved is not None and resolved != image.image:
            outcome.patch.append({"op": "replace", "path": image.pointer, "value": resolved})
    return outcome


def respond(uid: str, outcome: Outcome) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if outcome.patch:
        patch = json.dumps(outcome.patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(patch).decode()
    if outcome.warnings:
        response["warnings"] = outcome.warnings
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def error_response(uid: str, message: str) -> dict[str, Any]:
    """Allow unchanged, saying why: for objects we could not process."""
    return respond(uid, Outcome(warnings=[message]))


def is_image_stream(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    return (
        isinstance(kind, Mapping)
        and kind.get("group") == "image.openshift.io"
        and kind.get("kind") == "ImageStream"
        and not request.get("subResource")
    )


def stamp_generations(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> Outcome:
    """ImageStreams: give new and changed spec tags a generation (streams.generation_stamps),
    which is how the controller learns that a tag must be imported again."""
    try:
        stamps = generation_stamps(obj, old)
    except InvalidImageStream:
        return Outcome()  # the CRD schema rejects it; not ours to judge
    return Outcome(
        patch=[
            {"op": "add", "path": f"/spec/tags/{i}/generation", "value": generation}
            for i, generation in stamps.items()
        ]
    )


# --- resolution of one image -------------------------------------------------------------


def resolve_image(
    image: str, namespace: str, streams: StreamLookup, force: bool = False
) -> tuple[str | None, str | None]:
    """(pinned reference or None, warning or None) for one image string.

    A candidate is a short name (`name`, `name:tag`); with the resolve-names annotation
    (`force`) any reference without a digest is, and its last path component names the
    stream. The stream is looked up in `namespace` only.
    """
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return None, None  # not ours to judge: the runtime will report it
    if ref.digest is not None or not (ref.is_short or force):
        return None, None
    entry = streams.get(namespace, ref.last_component)
    if entry is None or not (entry.lookup_local or force):
        return None, None
    tag = ref.tag or reference.DEFAULT_TAG
    if tag not in entry.images:
        return None, f"image stream {namespace}/{entry.name} has no tag {tag!r}; {image} left as is"
    pinned = entry.images[tag]
    if pinned is None:
        return None, (
            f"image stream tag {namespace}/{entry.name}:{tag} has no image yet "
            f"(not imported); {image} left as is"
        )
    return pinned, entry.notes.get(tag)


# --- reading objects ---------------------------------------------------------------------


def request_kind(request: Mapping[str, Any]) -> str | None:
    """The pod-bearing kind this request is about (a key of POD_SPEC_PATHS), or None."""
    kind = request.get("kind")
    if not isinstance(kind, Mapping):
        return None
    name = kind.get("kind")
    if kind.get("group", "") not in _WORKLOAD_GROUPS or name not in POD_SPEC_PATHS:
        return None
    sub = request.get("subResource") or ""
    if sub and not (name == "Pod" and sub == "ephemeralcontainers"):
        return None
    return str(name)


def pod_images(obj: Mapping[str, Any], kind: str) -> Iterator[Image]:
    """Every container image of `obj`'s pod spec, with its JSON pointer."""
    path = POD_SPEC_PATHS[kind]
    spec = _walk(obj, path)
    if not isinstance(spec, Mapping):
        return
    base = "/" + "/".join(path)
    for list_name in CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for i, container in enumerate(containers):
            if not isinstance(container, Mapping):
                continue
            image = container.get("image")
            if isinstance(image, str):
                name = container.get("name")
                yield Image(
                    pointer=f"{base}/{list_name}/{i}/image",
                    list_name=list_name,
                    container=name if isinstance(name, str) else str(i),
                    image=image,
                )


def images_by_container(obj: Mapping[str, Any], kind: str) -> dict[tuple[str, str], str]:
    """(container list, container name) → image: what UPDATE compares against."""
    return {(i.list_name, i.container): i.image for i in pod_images(obj, kind)}


def resolve_names_forced(obj: Mapping[str, Any], kind: str) -> bool:
    """The resolve-names annotation is on the object or on its pod template."""
    template = _walk(obj, POD_SPEC_PATHS[kind][:-1]) if kind != "Pod" else None
    for holder in (obj, template):
        if isinstance(holder, Mapping):
            annotations = _metadata(holder).get("annotations")
            forced = isinstance(annotations, Mapping) and annotations.get(RESOLVE_NAMES_ANNOTATION)
            if forced == "*":
                return True
    return False


def _controlled_by_builtin_workload(obj: Mapping[str, Any]) -> bool:
    owners = _metadata(obj).get("ownerReferences")
    if not isinstance(owners, list):
        return False
    for owner in owners:
        if isinstance(owner, Mapping) and owner.get("controller") is True:
            group = str(owner.get("apiVersion", "")).rpartition("/")[0]
            return (group, owner.get("kind")) in _BUILTIN_OWNERS
    return False


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _walk(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj
