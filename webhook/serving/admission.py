"""AdmissionReview in, AdmissionReview out: short image names → pinned digests.

The pipeline, as k8s-digester's handler has it: parse the review, skip what is not ours,
find the images, resolve each against the stream index, diff into a JSONPatch, answer.
Pure given a `StreamLookup`; the HTTP layer lives in app.py, the rules in webhook.model.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.model.resolution import StreamLookup, candidate, resolve_image
from webhook.model.streams import InvalidImageStream, generation_stamps
from webhook.model.workloads import (
    controlled_by_builtin_workload,
    images_to_resolve,
    is_mapping,
    request_kind,
    request_namespace,
    resolve_names_forced,
)
from webhook.serving import limits

# The answer while a worker's stream index has not loaded yet (DESIGN.md: a tag without an
# image gets a warning; so does every image while no stream can be told apart from none).
NOT_LOADED = "image streams not loaded yet (the webhook is starting); left as is: "


class BadReview(ValueError):
    """The request body is not an AdmissionReview v1 we can answer (HTTP 400)."""


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
    if not is_mapping(body):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != "admission.k8s.io/v1" or body.get("kind") != "AdmissionReview":
        raise BadReview("expected apiVersion admission.k8s.io/v1, kind AdmissionReview")
    request = body.get("request")
    if not is_mapping(request):
        raise BadReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    return request


def mutate(request: Mapping[str, Any], streams: StreamLookup, *, loaded: bool = True) -> Outcome:
    """The patch and warnings for one admission request (empty when not ours).

    `loaded` False: the stream index has not been listed yet, so no image is resolved and
    each one that would have been looked up is named in a warning."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not is_mapping(obj):
        return Outcome()
    old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
    old = old if is_mapping(old) else None
    if is_image_stream(request):
        return stamp_generations(obj, old)
    kind = request_kind(request)
    if kind is None:
        return Outcome()
    if controlled_by_builtin_workload(obj):
        return Outcome()
    if not loaded:
        return unresolved_candidates(obj, kind, old)
    return resolve_object(obj, kind, request_namespace(request, obj), streams, old)


def resolve_object(
    obj: Mapping[str, Any],
    kind: str,
    namespace: str,
    streams: StreamLookup,
    old: Any = None,
) -> Outcome:
    """Resolve every candidate image of `obj`; on UPDATE, the images
    `workloads.images_to_resolve` chooses."""
    outcome = Outcome()
    force = resolve_names_forced(obj, kind)
    for image in images_to_resolve(obj, kind, old):
        resolved, warning = resolve_image(image.image, namespace, streams, force)
        if warning:
            outcome.warnings.append(f"{image.container}: {warning}")
        if resolved is not None and resolved != image.image:
            outcome.patch.append({"op": "replace", "path": image.pointer, "value": resolved})
    return outcome


def unresolved_candidates(obj: Mapping[str, Any], kind: str, old: Any = None) -> Outcome:
    """No patch, and one warning naming each image that would have been looked up."""
    force = resolve_names_forced(obj, kind)
    waiting = [
        f"{image.container}={image.image}"
        for image in images_to_resolve(obj, kind, old)
        if candidate(image.image, force) is not None
    ]
    return Outcome(warnings=[NOT_LOADED + ", ".join(waiting)] if waiting else [])


# One encoder: json.dumps builds a new one for every call with separators (~2 µs).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def respond(uid: str, outcome: Outcome) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if outcome.patch:
        patch = _COMPACT.encode(outcome.patch).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(patch).decode()
    if outcome.warnings:
        response["warnings"] = limits.warnings(outcome.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def is_image_stream(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    return (
        is_mapping(kind)
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
