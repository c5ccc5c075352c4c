"""ImageStream semantics over plain data: tags, history, generations, resolution.

The read side parses an ImageStream object (a dict as the API returns it) into frozen
dataclasses. The write side (`record_event`, `record_failure`) works on the status's JSON
shape so that the controller can write back exactly what it read plus its change.
Nothing here does I/O.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from webhook.model import reference

# The API's names: image.openshift.io/v1 imagestreams, as OpenShift serves it.
GROUP, VERSION, PLURAL = "image.openshift.io", "v1", "imagestreams"
API_VERSION = f"{GROUP}/{VERSION}"
DOCKER_IMAGE = "DockerImage"
IMAGE_STREAM_TAG = "ImageStreamTag"
IMAGE_STREAM_IMAGE = "ImageStreamImage"
SOURCE_POLICY = "Source"
LOCAL_POLICY = "Local"
PRESERVE_ORIGINAL = "PreserveOriginal"
LEGACY = "Legacy"
IMPORT_SUCCESS = "ImportSuccess"
MIRRORED = "Mirrored"  # tag condition: the current image is copied to the local registry

# Aliases can chain (latest → 8 → 8.0); a longer chain is a loop or a mistake.
_MAX_ALIAS_DEPTH = 10


class InvalidImageStream(ValueError):
    """An object that cannot be read as an ImageStream; the message says where."""


@dataclass(frozen=True, slots=True)
class ObjectReference:
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class TagReference:
    """One entry of `spec.tags`: what a tag should track."""

    name: str
    source: ObjectReference | None = None
    reference: bool = False
    generation: int | None = None
    insecure: bool = False
    scheduled: bool = False
    import_mode: str = ""
    reference_policy: str = SOURCE_POLICY
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagEvent:
    """One item of a tag's history (`status.tags[].items[]`)."""

    created: str
    docker_image_reference: str
    image: str
    generation: int


@dataclass(frozen=True, slots=True)
class TagCondition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    generation: int = 0
    last_transition_time: str = ""


@dataclass(frozen=True, slots=True)
class TagHistory:
    """One entry of `status.tags`: a tag's history, newest first, and its conditions."""

    tag: str
    items: tuple[TagEvent, ...] = ()
    conditions: tuple[TagCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageStream:
    namespace: str
    name: str
    generation: int = 0  # metadata.generation: bumped by the API server on every spec change
    lookup_local: bool = False
    spec_repository: str = ""
    status_repository: str = ""
    public_repository: str = ""
    spec_tags: tuple[TagReference, ...] = ()
    status_tags: tuple[TagHistory, ...] = ()

    def spec_tag(self, tag: str) -> TagReference | None:
        return next((t for t in self.spec_tags if t.name == tag), None)

    def history(self, tag: str) -> TagHistory | None:
        return next((h for h in self.status_tags if h.tag == tag), None)


# --- reading -----------------------------------------------------------------------------


def parse_image_stream(obj: Mapping[str, Any]) -> ImageStream:
    """Read an ImageStream object. Raises InvalidImageStream naming the bad field."""
    if not isinstance(obj, Mapping):
        raise InvalidImageStream("an ImageStream must be an object")
    metadata = _mapping(obj.get("metadata"), "metadata")
    spec = _mapping(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidImageStream("metadata.name is required")
    lookup = _mapping(spec.get("lookupPolicy"), "spec.lookupPolicy")
    return ImageStream(
        namespace=_str(metadata.get("namespace"), "metadata.namespace"),
        name=name,
        generation=_optional_int(metadata.get("generation"), "metadata.generation") or 0,
        lookup_local=_bool(lookup.get("local"), "spec.lookupPolicy.local"),
        spec_repository=_str(spec.get("dockerImageRepository"), "spec.dockerImageRepository"),
        status_repository=_str(status.get("dockerImageRepository"), "status.dockerImageRepository"),
        public_repository=_str(
            status.get("publicDockerImageRepository"), "status.publicDockerImageRepository"
        ),
        spec_tags=tuple(
            parse_tag_reference(t, f"spec.tags[{i}]")
            for i, t in enumerate(_list(spec.get("tags"), "spec.tags"))
        ),
        status_tags=tuple(
            _parse_history(t, f"status.tags[{i}]")
            for i, t in enumerate(_list(status.get("tags"), "status.tags"))
        ),
    )


_reading = threading.local()


@contextmanager
def reading_once() -> Iterator[None]:
    """Within this block (on this thread), read_once reads each object once.

    A Tee hands each object of a list or watch to several sinks in turn (the admission
    index, the policy images), and each would read it again: a third of a worker's load
    time at 10,000 streams. The block is one object's round of the sinks, so an object
    cannot change between its readings."""
    _reading.last = None
    _reading.on = True
    try:
        yield
    finally:
        _reading.on = False
        _reading.last = None


class _Read:
    """One object's reading: the stream (or why it is not one), and its entry once asked."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.obj = obj
        self.stream: ImageStream | InvalidImageStream
        try:
            self.stream = parse_image_stream(obj)
        except InvalidImageStream as err:
            self.stream = err
        self.entry: StreamEntry | None = None


def _last_read() -> _Read | None:
    last: _Read | None = getattr(_reading, "last", None)
    return last if getattr(_reading, "on", False) else None


def read_once(obj: Mapping[str, Any]) -> ImageStream:
    """parse_image_stream; inside reading_once, the last object's reading is reused."""
    if not getattr(_reading, "on", False):
        return parse_image_stream(obj)
    last = _last_read()
    if last is None or last.obj is not obj:
        last = _reading.last = _Read(obj)
    if isinstance(last.stream, InvalidImageStream):
        raise last.stream
    return last.stream


def entry_once(stream: ImageStream) -> StreamEntry:
    """stream_entry; inside reading_once, computed once for the stream read last."""
    last = _last_read()
    if last is None or last.stream is not stream:
        return stream_entry(stream)
    if last.entry is None:
        last.entry = stream_entry(stream)
    return last.entry


def parse_tag_reference(obj: Any, where: str = "spec.tags[]") -> TagReference:
    """Read one spec tag. Raises InvalidImageStream naming the bad field (under `where`)."""
    obj = _mapping(obj, where)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidImageStream(f"{where}.name is required")
    source = None
    if obj.get("from") is not None:
        src = _mapping(obj["from"], f"{where}.from")
        source = ObjectReference(
            kind=_str(src.get("kind"), f"{where}.from.kind"),
            name=_str(src.get("name"), f"{where}.from.name"),
            namespace=_str(src.get("namespace"), f"{where}.from.namespace"),
        )
    policy = _mapping(obj.get("importPolicy"), f"{where}.importPolicy")
    ref_policy = _mapping(obj.get("referencePolicy"), f"{where}.referencePolicy")
    annotations = _mapping(obj.get("annotations"), f"{where}.annotations")
    return TagReference(
        name=name,
        source=source,
        reference=_bool(obj.get("reference"), f"{where}.reference"),
        generation=_optional_int(obj.get("generation"), f"{where}.generation"),
        insecure=_bool(policy.get("insecure"), f"{where}.importPolicy.insecure"),
        scheduled=_bool(policy.get("scheduled"), f"{where}.importPolicy.scheduled"),
        import_mode=_str(policy.get("importMode"), f"{where}.importPolicy.importMode"),
        reference_policy=_str(ref_policy.get("type"), f"{where}.referencePolicy.type")
        or SOURCE_POLICY,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def _parse_history(obj: Any, where: str) -> TagHistory:
    obj = _mapping(obj, where)
    tag = obj.get("tag")
    if not isinstance(tag, str) or not tag:
        raise InvalidImageStream(f"{where}.tag is required")
    items = []
    for i, item in enumerate(_list(obj.get("items"), f"{where}.items")):
        at = f"{where}.items[{i}]"
        item = _mapping(item, at)
        items.append(
            TagEvent(
                created=_str(item.get("created"), f"{at}.created"),
                docker_image_reference=_str(
                    item.get("dockerImageReference"), f"{at}.dockerImageReference"
                ),
                image=_str(item.get("image"), f"{at}.image"),
                generation=_optional_int(item.get("generation"), f"{at}.generation") or 0,
            )
        )
    conditions = []
    for i, cond in enumerate(_list(obj.get("conditions"), f"{where}.conditions")):
        at = f"{where}.conditions[{i}]"
        cond = _mapping(cond, at)
        conditions.append(
            TagCondition(
                type=_str(cond.get("type"), f"{at}.type"),
                status=_str(cond.get("status"), f"{at}.status"),
                reason=_str(cond.get("reason"), f"{at}.reason"),
                message=_str(cond.get("message"), f"{at}.message"),
                generation=_optional_int(cond.get("generation"), f"{at}.generation") or 0,
                last_transition_time=_str(
                    cond.get("lastTransitionTime"), f"{at}.lastTransitionTime"
                ),
            )
        )
    return TagHistory(tag=tag, items=tuple(items), conditions=tuple(conditions))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidImageStream(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidImageStream(f"{where} must be a list")
    return value


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidImageStream(f"{where} must be a string")
    return value


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidImageStream(f"{where} must be true or false")
    return value


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidImageStream(f"{where} must be an integer")
    return value


# --- resolution ----------------------------------------------------------------------------


def alias_target(stream: ImageStream, spec: TagReference) -> str | None:
    """The tag that `spec` tracks within the same stream, or None.

    An `ImageStreamTag` source names `tag` or `stream:tag`; it is an alias only when it
    points into this very stream.
    """
    source = spec.source
    if source is None or source.kind != IMAGE_STREAM_TAG:
        return None
    if source.namespace and source.namespace != stream.namespace:
        return None
    stream_name, sep, tag = source.name.rpartition(":")
    if not sep:
        return source.name
    return tag if stream_name == stream.name else None


def current_event(stream: ImageStream, tag: str) -> TagEvent | None:
    """The tag's current image: its newest history item, following same-stream aliases.

    Status is the truth; an alias is followed only while the controller has not yet
    written the alias's own status (so a stream applied with only spec still resolves).
    """
    seen: set[str] = set()
    while tag not in seen and len(seen) < _MAX_ALIAS_DEPTH:
        seen.add(tag)
        history = stream.history(tag)
        if history is not None and history.items:
            return history.items[0]
        spec = stream.spec_tag(tag)
        target = alias_target(stream, spec) if spec is not None else None
        if target is None:
            return None
        tag = target
    return None


def pinned_reference(stream: ImageStream, tag: str) -> str | None:
    """What a short name `stream:tag` resolves to, or None when the tag has no image.

    `Source` policy: the image's own repository pinned by digest. `Local`: the stream's
    in-cluster repository pinned by the same digest, once status names that repository.
    A recorded reference with no known digest resolves to itself, fully qualified.
    """
    event = current_event(stream, tag)
    if event is None or not event.docker_image_reference:
        return None
    try:
        source = reference.parse_normalized(event.docker_image_reference)
    except reference.InvalidReference:
        return None
    digest = event.image if reference.is_valid_digest(event.image) else source.digest
    if digest is None:
        return str(source)
    spec = stream.spec_tag(tag)
    local = spec is not None and spec.reference_policy == LOCAL_POLICY
    if local and stream.status_repository and is_mirrored(stream.history(tag)):
        return f"{stream.status_repository}@{digest}"
    # Source policy, or Local not copied yet (admission warns): the source.
    return str(source.with_digest(digest))


def is_mirrored(history: TagHistory | None) -> bool:
    """Whether the copy of the tag's current image into the stream's local repository is
    complete. A `Mirrored=True` condition says exactly that, because of who writes and clears
    it: the mirror records it only while `items[0]` is the image it copied, a new image clears
    every condition (`record_event`), and a new local repository clears every `Mirrored`
    (mirror.plan.with_local_repository). Its message is for people."""
    return history is not None and any(
        c.type == MIRRORED and c.status == "True" for c in history.conditions
    )


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """What admission needs of one stream, computed once when the stream changes.

    `images` maps every tag named in spec or status to its pinned reference, or to None
    when the tag exists but has no image yet. `notes` holds, for tags resolved with a
    caveat, the warning admission returns with the answer.
    """

    namespace: str
    name: str
    lookup_local: bool
    images: Mapping[str, str | None]
    notes: Mapping[str, str] = field(default_factory=dict)


def stream_entry(stream: ImageStream) -> StreamEntry:
    tags = dict.fromkeys([t.name for t in stream.spec_tags] + [h.tag for h in stream.status_tags])
    images = {tag: pinned_reference(stream, tag) for tag in tags}
    return StreamEntry(
        namespace=stream.namespace,
        name=stream.name,
        lookup_local=stream.lookup_local,
        images=images,
        notes={
            tag: f"image stream tag {stream.namespace}/{stream.name}:{tag} has reference "
            "policy Local but its copy in the local registry is not complete yet; "
            "the source image is used"
            for tag, image in images.items()
            if image is not None and _awaiting_local_copy(stream, tag, image)
        },
    )


def _awaiting_local_copy(stream: ImageStream, tag: str, image: str) -> bool:
    spec = stream.spec_tag(tag)
    if spec is None or spec.reference_policy != LOCAL_POLICY or "@" not in image:
        return False
    return not (stream.status_repository and image.startswith(stream.status_repository + "@"))


# --- generations and history (the controller's rules) ------------------------------------


def seen_generation(history: TagHistory | None) -> int | None:
    """The newest spec generation that status has answered, by an image or a failure."""
    if history is None:
        return None
    seen = [h.generation for h in history.items[:1]]
    seen += [c.generation for c in history.conditions if c.type == IMPORT_SUCCESS]
    return max(seen) if seen else None


def tag_generation(stream: ImageStream, spec: TagReference) -> int:
    """The generation a spec tag is at.

    OpenShift's API server stamps each new or changed tag with the stream's generation; a
    CRD has no such hook, so a tag without one (None, or 0 as `tag` writes to ask for a
    re-import) is taken to be at the stream's own `metadata.generation`, which the API
    server bumps on every spec change. An explicit generation (from an OpenShift export)
    is kept as it is.
    """
    return spec.generation or stream.generation


def generation_stamps(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None, namespace: str = ""
) -> dict[int, int]:
    """Spec tags to stamp with a generation, as OpenShift's API server does: index → value.

    A tag that is new, whose source changed (`tag_ref_changed`) while its generation did not,
    or whose generation a user set to 0 (asking for a re-import), is stamped; others are left
    alone, and so is an explicit generation a user or the CLI wrote (OpenShift reverts those;
    `imagestreams import-image` relies on them). The stamp is the generation the stream is
    about to have (1 on create, the old one plus 1 on update: the stamp is itself a spec
    change), and always newer than anything status has recorded for the tag and than the
    tag's old generation, so an edit re-imports even in a stream restored or applied from
    another cluster with its generations (OpenShift's rule leaves such a stream stuck).
    """
    tags = _mapping(obj.get("spec"), "spec").get("tags")
    if not isinstance(tags, list):
        return {}
    metadata = _mapping(obj.get("metadata"), "metadata")
    namespace = namespace or str(metadata.get("namespace") or "")
    old_tags: dict[str, Mapping[str, Any]] = {}
    seen: dict[str, int] = {}
    next_generation = 1
    if old is not None:
        old_spec_tags = _mapping(old.get("spec"), "spec").get("tags")
        for tag in old_spec_tags if isinstance(old_spec_tags, list) else []:
            if isinstance(tag, Mapping) and isinstance(tag.get("name"), str):
                old_tags[tag["name"]] = tag
        seen = _seen_generations(old.get("status"))
        old_generation = _mapping(old.get("metadata"), "metadata").get("generation")
        next_generation = (old_generation if isinstance(old_generation, int) else 0) + 1
    stamps = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, Mapping):
            continue
        name = str(tag.get("name"))
        before = old_tags.get(name)
        generation = tag.get("generation")
        if before is None:
            stamp = not generation
        elif generation != before.get("generation"):
            stamp = generation == 0
        else:
            stamp = tag_ref_changed(before, tag, namespace)
        if stamp:
            previous = before.get("generation") if before is not None else None
            previous = previous if isinstance(previous, int) else 0
            stamps[i] = max(next_generation, seen.get(name, 0) + 1, previous + 1)
    return stamps


def tag_ref_changed(old: Mapping[str, Any], new: Mapping[str, Any], namespace: str) -> bool:
    """Whether a spec tag's source changed, as OpenShift's `tagRefChanged` decides.

    `from`'s namespace is filled in with the stream's own before comparing, and only the
    namespace, name, `reference` and `importMode` count: not `from.kind` (a kind change with
    the same name is no new source), nor `scheduled`, `insecure` or the reference policy.
    A removed or empty `from` is no change either. A missing importMode is our default.
    """
    new_from = new.get("from")
    if not isinstance(new_from, Mapping) or not (new_from.get("kind") or new_from.get("name")):
        return False
    old_from = old.get("from")
    old_from = old_from if isinstance(old_from, Mapping) else {}
    return bool(
        (old_from.get("namespace") or namespace) != (new_from.get("namespace") or namespace)
        or old_from.get("name") != new_from.get("name")
        or bool(old.get("reference")) != bool(new.get("reference"))
        or _import_mode(old) != _import_mode(new)
    )


def _import_mode(tag: Mapping[str, Any]) -> str:
    policy = tag.get("importPolicy")
    mode = policy.get("importMode") if isinstance(policy, Mapping) else None
    # The CRD has no defaulting: a missing (or unknown) mode is the one imports use.
    return mode if mode in (LEGACY, PRESERVE_ORIGINAL) else PRESERVE_ORIGINAL


def _seen_generations(status: Any) -> dict[str, int]:
    """tag → the newest generation status has answered (an image or a failed import)."""
    entries = status.get("tags") if isinstance(status, Mapping) else None
    seen: dict[str, int] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("tag"), str):
            continue
        items = entry.get("items")
        conditions = entry.get("conditions")
        answers = [items[0]] if isinstance(items, list) and items else []
        if isinstance(conditions, list):
            answers += [c for c in conditions if isinstance(c, Mapping)]
        generations = [
            a["generation"]
            for a in answers
            if isinstance(a, Mapping)
            and a.get("type", IMPORT_SUCCESS) == IMPORT_SUCCESS
            and isinstance(a.get("generation"), int)
        ]
        if generations:
            seen[entry["tag"]] = max(generations)
    return seen


def needs_import(stream: ImageStream, spec: TagReference) -> bool:
    """A DockerImage tag that status has not yet answered at the tag's generation."""
    if spec.source is None or spec.source.kind != DOCKER_IMAGE or spec.reference:
        return False
    seen = seen_generation(stream.history(spec.name))
    return seen is None or tag_generation(stream, spec) > seen


def record_event(
    status_tags: Iterable[Mapping[str, Any]], tag: str, event: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with `event` as the tag's current image; and whether anything changed.

    OpenShift's rule (`AddTagEventToImageStream`): a new item is prepended only when both
    the reference and the image differ from the current one; when only one differs, the
    current item takes the new reference or image (and generation) in place, keeping when it
    was first seen; when neither does, only a new generation is written. Any change clears
    the tag's conditions, except that a `Mirrored` condition stays while the image (the
    digest the copy is of) stays: a re-pointed reference or a generation bump does not undo
    a complete copy. A successful import always answers an earlier failed one (we retry
    failures; OpenShift leaves them until the next change).
    """
    result, entry = _copy_with_entry(status_tags, tag)
    items = entry.get("items") or []
    entry["items"] = items
    head = items[0] if items else None
    conditions = entry.get("conditions") or []
    same_image = False
    if head is None:
        items.insert(0, dict(event))
    else:
        same_reference = head.get("dockerImageReference") == event.get("dockerImageReference")
        same_image = head.get("image") == event.get("image")
        if same_reference or same_image:
            updated = {
                **head,
                "dockerImageReference": event.get("dockerImageReference"),
                "image": event.get("image"),
                "generation": event.get("generation"),
            }
            failed = any(c.get("type") == IMPORT_SUCCESS for c in conditions)
            if updated == head and not failed:
                return result, False
            items[0] = updated
        else:
            items.insert(0, dict(event))
    kept = [c for c in conditions if c.get("type") == MIRRORED] if same_image else []
    if kept:
        entry["conditions"] = kept
    else:
        entry.pop("conditions", None)
    return result, True


def record_failure(
    status_tags: Iterable[Mapping[str, Any]], tag: str, condition: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with a failed import recorded; the history stays as it was."""
    result, entry = _copy_with_entry(status_tags, tag)
    old = next((c for c in entry.get("conditions") or [] if c.get("type") == IMPORT_SUCCESS), None)
    keys = ("status", "reason", "message", "generation")
    if old is not None and all(old.get(k) == condition.get(k) for k in keys):
        return result, False
    others = [c for c in entry.get("conditions") or [] if c.get("type") != IMPORT_SUCCESS]
    entry["conditions"] = [dict(condition), *others]
    return result, True


def _copy_with_entry(
    status_tags: Iterable[Mapping[str, Any]], tag: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = [_deep_copy(t) for t in status_tags]
    entry = next((t for t in result if t.get("tag") == tag), None)
    if entry is None:
        entry = {"tag": tag, "items": []}
        result.append(entry)
    return result, entry


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def own(text: str) -> str:
    """`text` as a string of its own (interned), sharing nothing with the decoded object.

    An entry that kept strings of a decoded list would pin the allocator's arenas holding the
    rest of that list: after loading 10,000 streams x 5 tags x 3 history items, ~20 MiB of
    index held ~180 MiB of RSS in every worker (bench/, figure 4).
    """
    return sys.intern(text.encode().decode()) if text else text
