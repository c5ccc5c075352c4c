"""What the user verbs change, as pure functions over plain dicts.

Every verb is "read an object, compute its new spec (or status, or annotations), write it
back with the resourceVersion it was read at". The computing half lives here, following
`oc`'s rules (pkg/cli/tag, pkg/cli/create, pkg/cli/set/imagelookup): given the stream dict
as the API returned it and the parsed arguments, return the new `spec.tags`, the patch, or
an `EditError` whose message names the object and says what to do. No I/O.

Generations: OpenShift's API server stamps a changed spec tag with a new generation; a CRD
has no such hook, so every tag written here carries an explicit generation one above any
generation the stream has seen (`next_generation`). That is always a real spec change (so
`metadata.generation` moves too) and always newer than status, so the controller imports
or copies it: also when the same source is tagged again, which is how `oc tag` is used to
force a re-import and what `import-image` relies on.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.model import reference, streams
from webhook.model.streams import API_VERSION, ImageStream
from webhook.model.workloads import (
    POD_SPEC_PATHS,
    RESOLVE_NAMES_ANNOTATION,
    WORKLOADS,
    WorkloadKind,
)

STREAM_RESOURCE = "imagestreams.image.openshift.io"
STREAM_TYPE = "imagestream.image.openshift.io"
ISTAG_RESOURCE = "imagestreamtags.image.openshift.io"
ISTAG_TYPE = "imagestreamtag.image.openshift.io"
REFERENCE_POLICIES = {"source": streams.SOURCE_POLICY, "local": streams.LOCAL_POLICY}
IMPORT_MODES = {"legacy": streams.LEGACY, "preserveoriginal": streams.PRESERVE_ORIGINAL}
SOURCE_KINDS = {
    "docker": streams.DOCKER_IMAGE,
    "dockerimage": streams.DOCKER_IMAGE,
    "istag": streams.IMAGE_STREAM_TAG,
    "imagestreamtag": streams.IMAGE_STREAM_TAG,
    "isimage": streams.IMAGE_STREAM_IMAGE,
    "imagestreamimage": streams.IMAGE_STREAM_IMAGE,
}
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")


class EditError(ValueError):
    """A change that cannot be made; the message is meant for the user as it is."""


def not_found(name: str) -> str:
    return f'{STREAM_RESOURCE} "{name}" not found'


# --- names -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamTag:
    """`[namespace/]stream:tag` as the user wrote it, with the namespace filled in."""

    namespace: str
    stream: str
    tag: str
    explicit_namespace: bool = False

    @property
    def name(self) -> str:
        return f"{self.stream}:{self.tag}"

    def display(self, current_namespace: str) -> str:
        """`stream:tag`, or `ns/stream:tag` when it is not in the current namespace."""
        if self.namespace == current_namespace:
            return self.name
        return f"{self.namespace}/{self.name}"


def parse_stream_tag(text: str, namespace: str, *, default_tag: str | None = None) -> StreamTag:
    """`[ns/]stream:tag`. Without a tag: `default_tag`, or an error as `oc tag` gives."""
    ns, explicit, rest = _split_namespace(text, namespace)
    stream, sep, tag = rest.partition(":")
    if not sep or not tag:
        if default_tag is None or sep:
            raise EditError(f"{text!r} must be of the form <stream_name>:<tag>")
        tag = default_tag
    check_stream_name(stream, text)
    if not _TAG_RE.fullmatch(tag):
        raise EditError(f"invalid tag {tag!r} in {text!r}")
    return StreamTag(ns, stream, tag, explicit)


def parse_stream_name(text: str, namespace: str) -> tuple[str, str]:
    """`[ns/]stream` → (namespace, stream)."""
    ns, _, name = _split_namespace(text, namespace)
    check_stream_name(name, text)
    return ns, name


def check_stream_name(name: str, text: str) -> None:
    if not name or len(name) > 253 or not _NAME_RE.fullmatch(name):
        raise EditError(
            f"invalid image stream name {name!r} in {text!r}: use lowercase letters, digits,"
            " '-' and '.'"
        )


def _split_namespace(text: str, namespace: str) -> tuple[str, bool, str]:
    if "/" not in text:
        return namespace, False, text
    parts = text.split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise EditError(f"invalid image stream {text!r}: expected [namespace/]name")
    return parts[0], True, parts[1]


# --- tag sources (oc tag's SOURCE argument) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """What a tag will point at: a `from` object reference, and how to print it."""

    kind: str
    name: str  # DockerImage: the pull spec; others: `stream:tag` or `stream@digest`
    namespace: str = ""  # the source stream's namespace ("" = the destination's)

    @property
    def stream(self) -> str:
        return re.split(r"[:@]", self.name, maxsplit=1)[0]

    def display(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def parse_source(text: str, hint: str | None = None) -> Source:
    """oc tag's SOURCE: which kind it is, from its shape or from `--source`.

    A registry host means DockerImage; `stream@digest` an ImageStreamImage; `stream:tag` an
    ImageStreamTag; anything else DockerImage (so `mysql` is Docker Hub's, but
    `openshift/ruby:2.0` is the stream `ruby` in namespace `openshift` unless
    `--source=docker` says otherwise: oc's rule).
    """
    kind = _source_kind(hint)
    try:
        ref = reference.parse(text)
    except reference.InvalidReference as err:
        raise EditError(f"invalid SOURCE: {err}") from None
    if kind is None:
        if ref.domain:
            kind = streams.DOCKER_IMAGE
        elif ref.digest:
            kind = streams.IMAGE_STREAM_IMAGE
        elif ref.tag:
            kind = streams.IMAGE_STREAM_TAG
        else:
            kind = streams.DOCKER_IMAGE
    if kind == streams.DOCKER_IMAGE:
        return Source(kind, text)
    return _stream_source(kind, ref, text)


def _source_kind(hint: str | None) -> str | None:
    if not hint:
        return None
    kind = SOURCE_KINDS.get(hint.lower())
    if kind is None:
        valid = ", ".join(sorted(SOURCE_KINDS))
        raise EditError(f"invalid source {hint!r}; valid values are {valid}")
    return kind


def _stream_source(kind: str, ref: reference.Reference, text: str) -> Source:
    if ref.domain:
        raise EditError("server in SOURCE is only allowed when providing a container image")
    namespace, _, stream = ref.path.rpartition("/")
    if "/" in namespace:
        raise EditError(f"invalid SOURCE {text!r}: expected [namespace/]stream:tag")
    if kind == streams.IMAGE_STREAM_TAG:
        if not ref.tag or ref.digest:
            raise EditError("--source=istag requires a valid <name>:<tag> in SOURCE")
        return Source(kind, f"{stream}:{ref.tag}", namespace)
    if not ref.digest:
        raise EditError("--source=isimage requires a valid <name>@<digest> in SOURCE")
    return Source(kind, f"{stream}@{ref.digest}", namespace)


def copy_current_image(source: Source, source_obj: Mapping[str, Any]) -> Source:
    """`oc tag is:tag dest` without --alias: the source tag's current image, pinned.

    Raises EditError when that tag has no image yet.
    """
    stream = streams.parse_image_stream(source_obj)
    tag = source.name.partition(":")[2]
    event = streams.current_event(stream, tag)
    if event is None or not event.docker_image_reference:
        raise EditError(
            f"{source.display()!r} is not currently pointing to an image (not imported yet),"
            f" so it cannot be the source of a tag; see `imagestreams describe is {stream.name}`"
        )
    if not reference.is_valid_digest(event.image):
        return Source(streams.DOCKER_IMAGE, event.docker_image_reference)
    return Source(streams.IMAGE_STREAM_IMAGE, f"{stream.name}@{event.image}", source.namespace)


# --- building and placing spec tags ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagOptions:
    """The flags that shape a spec tag (oc tag / oc create istag)."""

    scheduled: bool = False
    insecure: bool = False
    reference: bool = False
    reference_policy: str = ""  # "", source, local
    import_mode: str = ""  # "", Legacy, PreserveOriginal


def validate_options(options: TagOptions) -> None:
    if options.reference_policy and options.reference_policy.lower() not in REFERENCE_POLICIES:
        raise EditError("reference policy must be set to 'source' or 'local'")
    if options.import_mode and options.import_mode.lower() not in IMPORT_MODES:
        raise EditError("import mode must be set to 'Legacy' or 'PreserveOriginal'")


def tag_reference(
    name: str, source: Source, options: TagOptions, generation: int
) -> dict[str, Any]:
    """A `spec.tags[]` entry, shaped as the OpenShift API serializes one."""
    validate_options(options)
    ref_from: dict[str, Any] = {"kind": source.kind, "name": source.name}
    if source.namespace:
        ref_from["namespace"] = source.namespace
    policy: dict[str, Any] = {}
    if options.insecure:
        policy["insecure"] = True
    if options.scheduled:
        policy["scheduled"] = True
    if options.import_mode:
        policy["importMode"] = IMPORT_MODES[options.import_mode.lower()]
    ref_policy = REFERENCE_POLICIES.get(options.reference_policy.lower(), streams.SOURCE_POLICY)
    tag: dict[str, Any] = {
        "name": name,
        "from": ref_from,
        "generation": generation,
        "importPolicy": policy,
        "referencePolicy": {"type": ref_policy},
    }
    if options.reference:
        tag["reference"] = True
    return tag


def next_generation(obj: Mapping[str, Any] | None) -> int:
    """One above every generation the stream knows: its own, its tags', its status'."""
    if obj is None:
        return 1  # a new object starts at metadata.generation 1
    stream = streams.parse_image_stream(obj)
    seen = [stream.generation]
    seen += [t.generation or 0 for t in stream.spec_tags]
    seen += [streams.seen_generation(h) or 0 for h in stream.status_tags]
    return max(seen) + 1


def spec_tags(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if obj is None:
        return []
    tags = (obj.get("spec") or {}).get("tags") or []
    return [copy.deepcopy(dict(t)) for t in tags]


def status_tags(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if obj is None:
        return []
    tags = (obj.get("status") or {}).get("tags") or []
    return [copy.deepcopy(dict(t)) for t in tags]


def with_tag(obj: Mapping[str, Any] | None, tag: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`spec.tags` with `tag` replacing the tag of the same name, or appended.

    The replaced tag's annotations are kept (they describe the tag, e.g. `description` or
    `importer.image.openshift.io/prefer-arch`; oc would drop them on a re-tag).
    """
    result = spec_tags(obj)
    new = copy.deepcopy(dict(tag))
    for i, old in enumerate(result):
        if old.get("name") == new["name"]:
            if old.get("annotations") and not new.get("annotations"):
                new["annotations"] = old["annotations"]
            result[i] = new
            return result
    result.append(new)
    return result


def new_stream(
    namespace: str, name: str, tags: Sequence[Mapping[str, Any]] = (), lookup_local: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {"lookupPolicy": {"local": lookup_local}}
    if tags:
        spec["tags"] = [dict(t) for t in tags]
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def spec_patch(obj: Mapping[str, Any], tags: list[dict[str, Any]]) -> dict[str, Any]:
    """A merge patch that replaces `spec.tags`, only if `obj` is still what we read."""
    return {
        "metadata": {"resourceVersion": _resource_version(obj)},
        "spec": {"tags": tags},
    }


def status_patch(obj: Mapping[str, Any], tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": _resource_version(obj)},
        "status": {"tags": tags},
    }


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


# --- oc tag ---------------------------------------------------------------------------------


def validate_tag_flags(
    source: Source | None, *, alias: bool, delete: bool, options: TagOptions
) -> None:
    """oc tag's Validate: which flags may go together."""
    if delete and alias:
        raise EditError("--alias and --delete may not be both specified")
    validate_options(options)
    if delete:
        if options.scheduled or options.insecure:
            raise EditError("cannot set flags for importing images when deleting a tag")
        return
    assert source is not None
    if source.kind != streams.DOCKER_IMAGE and (options.scheduled or options.insecure):
        raise EditError("only container images can have importing flags set")
    if alias and (options.scheduled or options.insecure):
        raise EditError("cannot set a container image tag as an alias and also set import flags")


def check_alias(source: Source, dests: Sequence[StreamTag], current_namespace: str) -> None:
    """--alias makes a tag track another tag of the same stream, nothing wider."""
    if source.kind != streams.IMAGE_STREAM_TAG:
        raise EditError("--alias needs an image stream tag (stream:tag) as SOURCE")
    source_ns = source.namespace or current_namespace
    for dest in dests:
        if dest.namespace != source_ns or dest.stream != source.stream:
            raise EditError("cannot set alias across different Image Streams")


def dest_source(source: Source, dest: StreamTag, current_namespace: str) -> Source:
    """The `from` to write into `dest`: oc names the source namespace only when needed."""
    if source.kind == streams.DOCKER_IMAGE or source.namespace:
        return source
    if dest.namespace != current_namespace:
        return Source(source.kind, source.name, current_namespace)
    return source


def tag_message(
    dest: StreamTag, source: Source, current_namespace: str, *, alias: bool, scheduled: bool
) -> str:
    """oc tag's confirmation line, word for word."""
    where = dest.display(current_namespace)
    if alias:
        return f"Tag {where} set up to track {source.display()}."
    if scheduled and dest.namespace == current_namespace:
        return f"Tag {where} set to import {source.display()} periodically."
    if scheduled:
        return f"Tag {where} set to {source.display()} periodically."
    return f"Tag {where} set to {source.display()}."


def delete_tag(
    obj: Mapping[str, Any], tag: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(spec.tags, status.tags) without `tag`. EditError when neither has it."""
    spec = [t for t in spec_tags(obj) if t.get("name") != tag]
    status = [t for t in status_tags(obj) if t.get("tag") != tag]
    if len(spec) == len(spec_tags(obj)) and len(status) == len(status_tags(obj)):
        name = (obj.get("metadata") or {}).get("name", "")
        raise EditError(f'{ISTAG_RESOURCE} "{name}:{tag}" not found')
    return spec, status


# --- oc create istag ------------------------------------------------------------------------


def create_istag(
    obj: Mapping[str, Any] | None, tag: str, source: Source, options: TagOptions
) -> list[dict[str, Any]]:
    """`spec.tags` with a new tag; EditError when the tag already exists."""
    if obj is not None:
        stream = streams.parse_image_stream(obj)
        if stream.spec_tag(tag) is not None:  # a status-only tag may be claimed (oc too)
            raise EditError(f'{ISTAG_RESOURCE} "{stream.name}:{tag}" already exists')
    if source.kind != streams.DOCKER_IMAGE and (options.scheduled or options.insecure):
        raise EditError("only container images (--from-image) can have importing flags set")
    return with_tag(obj, tag_reference(tag, source, options, next_generation(obj)))


def create_from_source(from_image: str | None, from_ref: str | None) -> Source:
    """oc create istag's --from-image (a registry image) or --from (a stream tag/image)."""
    if from_image and from_ref:
        raise EditError("--from and --from-image may not be used together")
    if from_image:
        try:
            reference.parse(from_image)
        except reference.InvalidReference as err:
            raise EditError(f"invalid --from-image: {err}") from None
        return Source(streams.DOCKER_IMAGE, from_image)
    if from_ref:
        if from_ref.startswith(":"):  # `:tag`: another tag of the same stream
            return Source(streams.IMAGE_STREAM_TAG, from_ref[1:])
        try:
            ref = reference.parse(from_ref)
        except reference.InvalidReference as err:
            raise EditError(
                f"invalid --from, must be a valid image stream tag or image stream image: {err}"
            ) from None
        if ref.domain:
            raise EditError("invalid --from, registry may not be specified")
        kind = streams.IMAGE_STREAM_IMAGE if ref.digest else streams.IMAGE_STREAM_TAG
        return _stream_source(kind, ref, from_ref)
    raise EditError("give the tag a source: --from-image REGISTRY/REPO:TAG or --from STREAM:TAG")


# --- import-image ---------------------------------------------------------------------------


def request_import(
    obj: Mapping[str, Any], tag: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ask for an import now: (new spec.tags, tag → generation to wait for).

    One tag, or every registry tag of the stream when `tag` is None.
    """
    stream = streams.parse_image_stream(obj)
    generation = next_generation(obj)
    if tag is not None:
        wanted = [_importable(stream, tag)]
    else:
        wanted = [t.name for t in stream.spec_tags if _is_registry_tag(t)]
        if not wanted:
            raise EditError(
                f"image stream {stream.name!r} has no registry tags to import; add one with"
                f" `imagestreams tag REGISTRY/REPO:TAG {stream.name}:TAG`"
            )
    tags = spec_tags(obj)
    for entry in tags:
        if entry.get("name") in wanted:
            entry["generation"] = generation
    return tags, dict.fromkeys(wanted, generation)


def _importable(stream: ImageStream, tag: str) -> str:
    spec = stream.spec_tag(tag)
    if spec is None:
        raise EditError(
            f'{ISTAG_RESOURCE} "{stream.name}:{tag}" not found; create it with'
            f" `imagestreams tag REGISTRY/REPO:TAG {stream.name}:{tag}`"
        )
    if not _is_registry_tag(spec):
        kind = spec.source.kind if spec.source else "no source"
        raise EditError(
            f"{stream.name}:{tag} is not imported from a registry ({kind}"
            f"{', reference only' if spec.reference else ''}); nothing to import"
        )
    return tag


def _is_registry_tag(spec: streams.TagReference) -> bool:
    return (
        spec.source is not None and spec.source.kind == streams.DOCKER_IMAGE and not spec.reference
    )


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """Where a requested import stands: pending, imported (`image`), or failed."""

    tag: str
    done: bool
    image: str = ""
    reason: str = ""
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.done and not self.image


def import_outcome(obj: Mapping[str, Any], tag: str, generation: int) -> ImportOutcome:
    """Has status answered `tag` at `generation` (or later), and how?"""
    stream = streams.parse_image_stream(obj)
    history = stream.history(tag)
    if history is None or (streams.seen_generation(history) or 0) < generation:
        return ImportOutcome(tag, done=False)
    for condition in history.conditions:
        failed = condition.type == streams.IMPORT_SUCCESS and condition.status == "False"
        if failed and condition.generation >= generation:
            return ImportOutcome(tag, True, "", condition.reason, condition.message)
    if not history.items:
        return ImportOutcome(tag, done=False)
    pinned = streams.pinned_reference(stream, tag) or history.items[0].docker_image_reference
    return ImportOutcome(tag, True, pinned)


# --- rollback -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollback:
    tags: list[dict[str, Any]]  # the new spec.tags
    old: str  # the current image reference
    new: str  # the one rolled back to
    was_tracking: str  # the DockerImage the tag followed before ("" if none)


def rollback(obj: Mapping[str, Any], tag: str, revision: int = 2) -> Rollback:
    """Point `tag` at its `revision`-th distinct image (1 = current) as an ImageStreamImage.

    The controller then records that image as a new history event, so the history shows
    the rollback and image triggers fire as for any other tag move.
    """
    stream = streams.parse_image_stream(obj)
    spec = stream.spec_tag(tag)
    history = stream.history(tag)
    if spec is None and history is None:
        raise EditError(f'{ISTAG_RESOURCE} "{stream.name}:{tag}" not found')
    if spec is not None and streams.alias_target(stream, spec) is not None:
        target = streams.alias_target(stream, spec)
        raise EditError(
            f"{stream.name}:{tag} tracks {stream.name}:{target}; roll back {stream.name}:{target}"
        )
    images = distinct_images(history)
    if not images:
        raise EditError(
            f"{stream.name}:{tag} has no image yet (not imported), nothing to roll back"
        )
    if revision < 1:
        raise EditError("--to-revision must be 1 (the current image) or more")
    if revision > len(images):
        raise EditError(
            f"{stream.name}:{tag} has {len(images)} distinct image(s) in its history, so there is"
            f" no revision {revision}; see `imagestreams describe is {stream.name}`"
        )
    if revision == 1:
        raise EditError(f"{stream.name}:{tag} is already at revision 1 ({images[0][1]})")
    digest, new_ref = images[revision - 1]
    entry = _rollback_entry(obj, tag, f"{stream.name}@{digest}", next_generation(obj))
    tracking = ""
    if spec is not None and spec.source is not None and spec.source.kind == streams.DOCKER_IMAGE:
        tracking = spec.source.name
    return Rollback(with_tag(obj, entry), images[0][1], new_ref, tracking)


def distinct_images(history: streams.TagHistory | None) -> list[tuple[str, str]]:
    """(digest, reference) of each distinct image in a tag's history, newest first."""
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in history.items if history else ():
        digest = item.image if reference.is_valid_digest(item.image) else _digest_of(item)
        if digest and digest not in seen:
            seen.add(digest)
            result.append((digest, item.docker_image_reference))
    return result


def _digest_of(item: streams.TagEvent) -> str:
    try:
        return reference.parse(item.docker_image_reference).digest or ""
    except reference.InvalidReference:
        return ""


def _rollback_entry(
    obj: Mapping[str, Any], tag: str, image: str, generation: int
) -> dict[str, Any]:
    current = next((t for t in spec_tags(obj) if t.get("name") == tag), {"name": tag})
    entry = dict(current)
    entry["from"] = {"kind": streams.IMAGE_STREAM_IMAGE, "name": image}
    entry["generation"] = generation
    entry.pop("reference", None)
    # Import flags mean nothing for an ImageStreamImage (oc refuses them there).
    policy = {k: v for k, v in (entry.get("importPolicy") or {}).items() if k == "importMode"}
    entry["importPolicy"] = policy
    return entry


# --- image lookup ---------------------------------------------------------------------------


def lookup_patch(obj: Mapping[str, Any], enabled: bool) -> dict[str, Any] | None:
    """A merge patch that sets `spec.lookupPolicy.local`, or None when it already is."""
    if streams.parse_image_stream(obj).lookup_local == enabled:
        return None
    return {"spec": {"lookupPolicy": {"local": enabled}}}


def resolve_names_enabled(obj: Mapping[str, Any], kind: str) -> bool:
    """Does the workload force lookups with the resolve-names annotation (template or own)?"""
    for path in (_template_metadata_path(kind), ("metadata",)):
        annotations = _walk(obj, (*path, "annotations"))
        if isinstance(annotations, Mapping) and annotations.get(RESOLVE_NAMES_ANNOTATION) == "*":
            return True
    return False


def resolve_names_patch(obj: Mapping[str, Any], kind: str, enabled: bool) -> dict[str, Any] | None:
    """A merge patch setting (or removing) the resolve-names annotation on the pod template
    (a Pod's own metadata), or None when nothing changes. oc set image-lookup deploy/NAME."""
    path = _template_metadata_path(kind)
    annotations = _walk(obj, (*path, "annotations"))
    current = (
        annotations.get(RESOLVE_NAMES_ANNOTATION) if isinstance(annotations, Mapping) else None
    )
    unchanged = current == "*" if enabled else current is None
    if unchanged:
        return None
    patch: dict[str, Any] = {"annotations": {RESOLVE_NAMES_ANNOTATION: "*" if enabled else None}}
    for key in reversed(path):
        patch = {key: patch}
    return patch


def _template_metadata_path(kind: str) -> tuple[str, ...]:
    spec_path = POD_SPEC_PATHS[kind]
    return (*spec_path[:-1], "metadata") if len(spec_path) > 1 else ("metadata",)


def _walk(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


# --- workloads ------------------------------------------------------------------------------


def parse_workload(text: str) -> tuple[WorkloadKind, str]:
    """`deploy/NAME`, `deployment.apps/NAME`, `sts/NAME`, … → (kind, name)."""
    kind_text, sep, name = text.partition("/")
    if not sep or not name or "/" in name:
        raise EditError(f"{text!r} is not of the form TYPE/NAME (for example deploy/myapp)")
    return workload_kind(kind_text), name


def workload_kind(text: str) -> WorkloadKind:
    key = text.lower().split(".", 1)[0]
    for kind in WORKLOADS.values():
        if kind.user_verbs and key in {kind.kind.lower(), kind.resource, *kind.short_names}:
            return kind
    known = "deploy, sts, ds, rs, job, cronjob, rc, pod"
    raise EditError(
        f"the server doesn't have a resource type {text!r} with pod templates ({known})"
    )
